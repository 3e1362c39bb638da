package s3blob

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7/pkg/credentials"
)

// ParseURL reads a blob store URL of the form
//
//	s3://BUCKET/PREFIX?endpoint=https://HOST:PORT&region=R&path_style=true&ca=FILE
//
// Only BUCKET is required; without endpoint the store is AWS's. The
// credentials come from the environment (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), else from credsFile (an AWS
// shared-credentials file, profile AWS_PROFILE or "default") when it is
// not empty. A URL never carries secrets.
func ParseURL(raw, credsFile string) (Config, error) {
	var c Config
	u, err := url.Parse(raw)
	if err != nil {
		return c, fmt.Errorf("blob store %q: %w", raw, err)
	}
	if u.Scheme != "s3" || u.Host == "" || u.User != nil || u.Fragment != "" {
		return c, fmt.Errorf("blob store %q is not an s3://BUCKET/PREFIX URL", raw)
	}
	c.Bucket = u.Host
	c.Prefix = strings.TrimPrefix(u.Path, "/")
	q := u.Query()
	for k := range q {
		switch k {
		case "endpoint", "region", "path_style", "ca":
		default:
			return c, fmt.Errorf("blob store %q: unknown parameter %q (endpoint, region, path_style, ca)", raw, k)
		}
	}
	c.Endpoint, c.Region, c.CAFile = q.Get("endpoint"), q.Get("region"), q.Get("ca")
	c.PathStyle = c.Endpoint != ""
	if v := q.Get("path_style"); v != "" {
		if c.PathStyle, err = strconv.ParseBool(v); err != nil {
			return c, fmt.Errorf("blob store %q: path_style is true or false", raw)
		}
	}
	providers := []credentials.Provider{&credentials.EnvAWS{}}
	if credsFile != "" {
		providers = append(providers, &credentials.FileAWSCredentials{Filename: credsFile})
	}
	c.Creds = credentials.NewChainCredentials(providers)
	return c, nil
}
