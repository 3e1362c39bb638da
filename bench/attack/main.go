// Command attack measures what each resource-exhaustion attack of issue 13
// does to rampart-server while an honest device checks in beside it: it
// builds and starts the real binary, enrolls the honest device (one
// check-in every 50 ms on its kept connection, as the was once a
// second but denser for a stabler median), measures it idle, then runs
// each attack for the given time and prints, per attack, the honest
// check-in median and p90 next to idle, the attack's rate and answers,
// the server's CPU, resident memory and database growth.
//
//	go run ./bench/attack                  # 10 s per attack
//	go run ./bench/attack -duration 20s -workers 8
//
// Run from the module root. The attacker, the honest device and the
// server share the machine's cores, as the measurements did, but
// the honest device runs in a process of its own (this program, started
// again with -probe), as a real device would; -in-process puts it back
// beside the attacker's goroutines.
package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	_ "modernc.org/sqlite"

	"github.com/rampartfw/rampart/internal/audit"
	"github.com/rampartfw/rampart/internal/server/attacktest"
)

func main() {
	duration := flag.Duration("duration", 10*time.Second, "how long each attack runs")
	workers := flag.Int("workers", 4, "concurrent attacking clients")
	only := flag.String("only", "", "run only the attacks whose name contains this (and idle)")
	inProcess := flag.Bool("in-process", false, "run the honest device inside this process, beside the attacker (the old measurement)")
	probeAddr := flag.String("probe", "", "internal: be the honest device, checking in at this address")
	probeDir := flag.String("probe-dir", "", "internal: the honest device's credentials")
	probeInterval := flag.Duration("probe-interval", 50*time.Millisecond, "internal: the honest device's check-in interval")
	flag.Parse()
	if *probeAddr != "" {
		if err := probe(*probeAddr, *probeDir, *probeInterval); err != nil {
			log.Fatal(err)
		}
		return
	}
	if err := run(*duration, *workers, *only, *inProcess); err != nil {
		log.Fatal(err)
	}
}

type row struct {
	name            string
	median, p90     time.Duration
	checkins        int
	failed          int
	rate            float64
	result          string
	cpu             float64 // server CPU-seconds per second
	rss             int64
	dbGrowth        int64
	cpuPerRequestMS float64
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(p*float64(len(s)-1))]
}

func run(d time.Duration, workers int, only string, inProcess bool) error {
	tmp, err := os.MkdirTemp("", "rampart-attack-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	wd, _ := os.Getwd()
	bin, err := attacktest.Build(wd, tmp)
	if err != nil {
		return err
	}
	srv, err := attacktest.Start(bin, tmp, map[string]any{"blob_quota": 256 << 20})
	if err != nil {
		return err
	}
	defer srv.Stop()
	flooder, err := srv.Enroll("gw-flood", "acme-gw-rev2")
	if err != nil {
		return err
	}
	replayer, err := srv.Enroll("gw-replay", "acme-gw-rev2")
	if err != nil {
		return err
	}
	token, err := srv.EnrollToken("acme-gw-rev2")
	if err != nil {
		return err
	}
	if err := padAudit(srv, 8000); err != nil {
		return err
	}
	var probe prober
	if inProcess {
		honest, err := srv.Enroll("gw-honest", "acme-gw-rev2")
		if err != nil {
			return err
		}
		probe = srv.NewProber(honest, 50*time.Millisecond)
	} else if probe, err = startProcessProber(srv, tmp, 50*time.Millisecond); err != nil {
		return err
	}
	defer probe.Stop()
	time.Sleep(time.Second)
	probe.Take()

	measure := func(name string, attack func(ctx context.Context) (attacktest.Result, error)) (row, error) {
		cpu0, err := srv.CPU()
		if err != nil {
			return row{}, err
		}
		db0, err := srv.DBBytes()
		if err != nil {
			return row{}, err
		}
		probe.Take()
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), d)
		res, err := attack(ctx)
		cancel()
		if err != nil {
			return row{}, err
		}
		// The attack's clients stop at the deadline; wait for it.
		if rest := d - time.Since(start); rest > 0 {
			time.Sleep(rest)
		}
		elapsed := time.Since(start)
		lat, errs := probe.Take()
		cpu1, _ := srv.CPU()
		db1, _ := srv.DBBytes()
		rss, _ := srv.RSS()
		r := row{name: name, median: pct(lat, .5), p90: pct(lat, .9), checkins: len(lat), failed: len(errs),
			rate: float64(res.Requests) / elapsed.Seconds(), result: res.String(),
			cpu: (cpu1 - cpu0).Seconds() / elapsed.Seconds(), rss: rss, dbGrowth: db1 - db0}
		if res.Requests > 0 {
			r.cpuPerRequestMS = float64((cpu1 - cpu0).Microseconds()) / 1000 / float64(res.Requests)
		}
		fmt.Fprintf(os.Stderr, "%s: check-in median %s; %s\n", name, r.median, r.result)
		if len(errs) > 0 {
			fmt.Fprintf(os.Stderr, "  %d check-ins failed, first: %v\n", len(errs), errs[0])
		}
		return r, nil
	}
	var rows []row
	add := func(name string, attack func(ctx context.Context) (attacktest.Result, error)) error {
		r, err := measure(name, attack)
		rows = append(rows, r)
		return err
	}
	noErr := func(f func(ctx context.Context) attacktest.Result) func(ctx context.Context) (attacktest.Result, error) {
		return func(ctx context.Context) (attacktest.Result, error) { return f(ctx), nil }
	}
	counter := int64(1)
	steps := []struct {
		name   string
		attack func(ctx context.Context) (attacktest.Result, error)
	}{
		{"idle", func(ctx context.Context) (attacktest.Result, error) { <-ctx.Done(); return attacktest.Result{}, nil }},
		{"enrollment, 60,000-bit RSA CSR, valid token", func(ctx context.Context) (attacktest.Result, error) {
			return srv.HugeCSR(ctx, workers, 0, token)
		}},
		{"enrollment, 60,000-bit RSA CSR, made-up token", func(ctx context.Context) (attacktest.Result, error) {
			return srv.HugeCSR(ctx, workers, 0, "")
		}},
		{"enrollment, made-up tokens, new device ids", func(ctx context.Context) (attacktest.Result, error) {
			return srv.RefusedEnrollments(ctx, workers, 0)
		}},
		{"new TLS connections, no certificate", noErr(func(ctx context.Context) attacktest.Result { return srv.Handshakes(ctx, workers, 0, nil) })},
		{"TLS, leaf + 100 intermediates of 8192-bit RSA", func(ctx context.Context) (attacktest.Result, error) {
			return srv.HostileHandshakes(ctx, workers, 0, 100)
		}},
		{"one device: reports with unique 1 KiB reasons", noErr(func(ctx context.Context) attacktest.Result {
			r := srv.Reports(ctx, workers, 0, flooder, counter, 1024, "failed", "downloading")
			counter += r.Requests + 1
			return r
		})},
		{"one device: replayed reports", noErr(func(ctx context.Context) attacktest.Result { return srv.Replays(ctx, workers, 0, replayer) })},
		{"auditor: audit pages of 10,000 asked", noErr(func(ctx context.Context) attacktest.Result { return srv.AuditPages(ctx, workers, 0) })},
		{"release manager: 4 MiB unreferenced blobs", noErr(func(ctx context.Context) attacktest.Result { return srv.Uploads(ctx, workers, 0, 4<<20) })},
	}
	for _, s := range steps {
		if s.name != "idle" && !strings.Contains(s.name, only) {
			continue
		}
		if err := add(s.name, s.attack); err != nil {
			return err
		}
	}
	idle := rows[0]
	where := "in a process of its own"
	if inProcess {
		where = "in the attacker's process"
	}
	fmt.Printf("%s, %d attacking clients, %s per attack, honest device checking in every 50 ms %s\n\n", time.Now().Format("2006-01-02"), workers, d, where)
	fmt.Println("| attack | attack rate | honest check-in p50 (× idle) | p90 | server CPU | CPU per request | RSS | database growth | answers |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		ratio := ""
		if idle.median > 0 {
			ratio = fmt.Sprintf(" (%.1f×)", float64(r.median)/float64(idle.median))
		}
		per := ""
		if r.cpuPerRequestMS > 0 {
			per = fmt.Sprintf("%.2f ms", r.cpuPerRequestMS)
		}
		fmt.Printf("| %s | %.0f/s | %s%s | %s | %.2f cores | %s | %d MiB | %s | %s |\n", r.name, r.rate, r.median.Round(10*time.Microsecond), ratio,
			r.p90.Round(10*time.Microsecond), r.cpu, per, r.rss>>20, bytesText(r.dbGrowth), strings.ReplaceAll(r.result, "|", "/"))
	}
	return nil
}

func bytesText(n int64) string {
	switch {
	case n == 0:
		return "0"
	case n < 1<<20:
		return fmt.Sprintf("%+d KiB", n>>10)
	}
	return fmt.Sprintf("%+.1f MiB", float64(n)/(1<<20))
}

// padAudit appends n audit entries of about 1.3 KB, chained after the
// head, in one transaction beside the running server: a log whose full
// pages are 13 MB, which the server must cut to its byte bound.
func padAudit(srv *attacktest.Server, n int) error {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(srv.Data, "rampart.db")+"?_pragma=busy_timeout(10000)&_txlock=immediate")
	if err != nil {
		return err
	}
	defer db.Close()
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var raw string
	if err := tx.QueryRow(`SELECT entry FROM audit ORDER BY seq DESC LIMIT 1`).Scan(&raw); err != nil {
		return err
	}
	var prev audit.Entry
	if err := json.Unmarshal([]byte(raw), &prev); err != nil {
		return err
	}
	pad := make([]byte, 600)
	rand.Read(pad)
	for i := range n {
		e, err := audit.Append(&prev, audit.Entry{Time: time.Now(), Actor: "bench", Action: "pad", Outcome: "ok", Detail: map[string]string{"i": fmt.Sprint(i), "pad": fmt.Sprintf("%x", pad)}})
		if err != nil {
			return err
		}
		b, _ := json.Marshal(e)
		if _, err := tx.Exec(`INSERT INTO audit (seq, hash, entry, at) VALUES (?, ?, ?, ?)`, e.Seq, e.Hash, string(b), e.Time.UnixNano()); err != nil {
			return err
		}
		prev = e
	}
	return tx.Commit()
}
