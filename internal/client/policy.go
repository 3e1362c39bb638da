package client

import (
	"context"
	"net/url"

	"github.com/rampartfw/rampart/internal/api"
)

// SetPolicy stores a new version of the fleet policy (the YAML source).
func (c *Client) SetPolicy(ctx context.Context, source string) (api.Policy, error) {
	var out api.Policy
	err := c.postJSON(ctx, "/api/v1/policy", api.PolicySet{Source: source}, &out)
	return out, err
}

// Policy returns the fleet policy in force.
func (c *Client) Policy(ctx context.Context) (api.Policy, error) {
	var out api.Policy
	err := c.getJSON(ctx, "/api/v1/policy", MaxSmallAnswer, &out)
	return out, err
}

// ExplainPolicy says whether the policy lets a device take a release.
func (c *Client) ExplainPolicy(ctx context.Context, device, release string, critical bool) (api.PolicyExplanation, error) {
	q := url.Values{"device": {device}, "release": {release}}
	if critical {
		q.Set("critical", "true")
	}
	var out api.PolicyExplanation
	err := c.getJSON(ctx, "/api/v1/policy/explain?"+q.Encode(), MaxSmallAnswer, &out)
	return out, err
}
