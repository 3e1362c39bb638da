//go:build e2e

// Package e2e boots the real agent on Debian's kernel under real
// bootloaders in QEMU (TCG, no KVM needed) and judges every scenario from
// outside the guest: the serial console, kept as an artifact, and the disk
// read back after QEMU exits. build.sh builds the machines; `make e2e` runs
// this suite. See docs/agent.md, "Proved on real boots".
package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// bootTimeout bounds one boot, power-on or reset to the guest's init. The
// goal is 30 s on an idle machine; the bound is generous because TCG
// shares the machine's two cores with whatever else runs.
var bootTimeout = envDuration("RAMPART_E2E_BOOT_TIMEOUT", 150*time.Second)

// powerTimeout bounds one power-on, from QEMU's start until the guest powers
// off: several boots and an install.
var powerTimeout = envDuration("RAMPART_E2E_POWER_TIMEOUT", 8*time.Minute)

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}

// machine is a built test machine (build.sh's output directory).
type machine struct {
	arch     string
	dir      string
	manifest []string
	// Partition offsets and sizes in bytes: boot, slot A, slot B, state.
	parts    [4][2]int64
	releases map[string]release // by version
	packages []string
	loader   string // grub or uboot
	max      int    // attempts a confirmed slot gets: GRUB 1, U-Boot 3
	// The U-Boot environment with the boot variables: offset and size on
	// the disk.
	ubootEnv [2]int64
	// weight is the cost of a boot here relative to arm64's (x86_64's
	// kernel is XZ-compressed, and its decompression under TCG takes most
	// of a boot): the scheduler starts the most expensive work first.
	weight float64

	// installTook is how long the guest took to write and verify release
	// 2 (measured by the commit scenario); the power cuts while writing
	// cut at fractions of it. installKnown is closed once it is set.
	installOnce  sync.Once
	installKnown chan struct{}
	installTook  time.Duration
}

// setInstallTook records the install time, once; d <= 0 keeps the default.
func (m *machine) setInstallTook(d time.Duration) {
	m.installOnce.Do(func() {
		if d > 0 {
			m.installTook = d
		}
		close(m.installKnown)
	})
}

type release struct {
	version string
	size    int64
	sha256  string
}

var (
	artifacts string
	figuresMu sync.Mutex
	figures   []string
	bootTimes = map[string][]time.Duration{} // by architecture
	// Power-ons and the time QEMU ran, by architecture.
	powerOns  = map[string]int{}
	qemuTimes = map[string]time.Duration{}
)

func TestMain(m *testing.M) {
	// Every scenario is a parallel test that waits for a lane (lanes
	// bounds the guests), and the power cuts while writing wait for the
	// lifecycle's install: go test's own bound on parallel tests
	// (-parallel, GOMAXPROCS by default) must not hold them back.
	flag.Parse()
	if f := flag.Lookup("test.parallel"); f != nil {
		if n, _ := strconv.Atoi(f.Value.String()); n < 64 {
			f.Value.Set("64")
		}
	}
	artifacts = os.Getenv("RAMPART_E2E_ARTIFACTS")
	if artifacts == "" {
		artifacts, _ = filepath.Abs("artifacts")
	}
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	start := time.Now()
	load0 := loadavg()
	code := m.Run()
	figuresMu.Lock()
	defer figuresMu.Unlock()
	var archs []string
	for arch := range bootTimes {
		archs = append(archs, arch)
	}
	sort.Strings(archs)
	for _, arch := range archs {
		times := bootTimes[arch]
		var max, sum time.Duration
		for _, d := range times {
			sum += d
			max = maxDur(max, d)
		}
		figures = append(figures, fmt.Sprintf("%s: %d boots, mean %.1fs, max %.1fs (power-on or reset to the guest's init)",
			arch, len(times), (sum/time.Duration(len(times))).Seconds(), max.Seconds()))
		figures = append(figures, fmt.Sprintf("%s: %d power-ons, QEMU ran %.0fs in all", arch, powerOns[arch], qemuTimes[arch].Seconds()))
	}
	figures = append(figures, fmt.Sprintf("suite: %.0fs, at most %d guests at once; load average at the start %s, at the end %s",
		time.Since(start).Seconds(), cap(lanes.slots), load0, loadavg()))
	text := strings.Join(figures, "\n") + "\n"
	fmt.Print("e2e figures:\n" + text)
	os.WriteFile(filepath.Join(artifacts, "figures.txt"), []byte(text), 0o644)
	os.Exit(code)
}

// loadavg is the host's 1-, 5- and 15-minute load average.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// lanes bounds the guests that run at once: TCG runs a guest with one
// vCPU on about one host core, so by default as many as there are cores
// (RAMPART_E2E_LANES). Each scenario holds a lane while it runs; a freed
// lane goes to the waiting scenario with the most work, so that the long
// ones start first and the short ones fill in at the end.
var lanes = newScheduler(envInt("RAMPART_E2E_LANES", runtime.NumCPU()))

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

type scheduler struct {
	slots   chan struct{} // capacity: the lanes
	mu      sync.Mutex
	waiting []*waiter
}

type waiter struct {
	cost  float64
	ready chan struct{}
}

func newScheduler(n int) *scheduler {
	return &scheduler{slots: make(chan struct{}, n)}
}

// lane waits for a lane for a scenario of this cost (its boots, weighted
// by the machine) and holds it until the test ends.
func (s *scheduler) lane(t *testing.T, cost float64) {
	t.Helper()
	w := &waiter{cost: cost, ready: make(chan struct{})}
	s.mu.Lock()
	s.waiting = append(s.waiting, w)
	s.mu.Unlock()
	// Scenarios released together arrive within moments of each other:
	// let them all queue before the first lane is handed out.
	time.AfterFunc(100*time.Millisecond, s.dispatch)
	start := time.Now()
	<-w.ready
	if d := time.Since(start); d > time.Second {
		t.Logf("waited %.0fs for a lane", d.Seconds())
	}
	t.Cleanup(func() {
		<-s.slots
		s.dispatch()
	})
}

func (s *scheduler) dispatch() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.waiting) > 0 {
		best := 0
		for i, w := range s.waiting {
			if w.cost > s.waiting[best].cost {
				best = i
			}
		}
		select {
		case s.slots <- struct{}{}:
		default:
			return
		}
		close(s.waiting[best].ready)
		s.waiting = append(s.waiting[:best], s.waiting[best+1:]...)
	}
}

func maxDur(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

func figure(format string, args ...any) {
	figuresMu.Lock()
	defer figuresMu.Unlock()
	figures = append(figures, fmt.Sprintf(format, args...))
}

var (
	machinesMu sync.Mutex
	machines   = map[string]*machine{}
	buildMu    = map[string]*sync.Mutex{"x86_64": {}, "arm64": {}}
)

// buildMachine runs build.sh once per architecture (it answers from its
// cache when nothing changed). The two machines build at the same time.
func buildMachine(t *testing.T, arch string) *machine {
	t.Helper()
	buildMu[arch].Lock()
	defer buildMu[arch].Unlock()
	machinesMu.Lock()
	m, ok := machines[arch]
	machinesMu.Unlock()
	if ok {
		return m
	}
	qemu := map[string]string{"x86_64": "qemu-system-x86_64", "arm64": "qemu-system-aarch64"}[arch]
	for _, tool := range []string{qemu, "debugfs", "grub-editenv", "fw_printenv", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: run scripts/e2e-deps.sh (make e2e does)", tool)
		}
	}
	start := time.Now()
	cmd := exec.Command("./build.sh", arch)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("build.sh %s: %v", arch, err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	dir := lines[len(lines)-1]
	figure("%s machine: build.sh %.0fs (%s)", arch, time.Since(start).Seconds(), dir)
	m = &machine{arch: arch, dir: dir, releases: map[string]release{}, weight: 1,
		installKnown: make(chan struct{}), installTook: 8 * time.Second}
	if arch == "x86_64" {
		m.weight = 2
	}
	b, err := os.ReadFile(filepath.Join(dir, "manifest"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		switch f[0] {
		case "disk":
			n := func(i int) int64 { v, _ := strconv.ParseInt(f[i], 10, 64); return v }
			mib := n(2)
			sizes := []int64{n(3), n(4), n(4), n(5)}
			off := int64(1)
			for i, s := range sizes {
				m.parts[i] = [2]int64{off * mib, s * mib}
				off += s
			}
		case "release":
			size, _ := strconv.ParseInt(f[2], 10, 64)
			m.releases[f[1]] = release{version: f[1], size: size, sha256: f[3]}
		case "kernel", "package":
			m.packages = append(m.packages, strings.Join(f[1:], " "))
		case "bootloader":
			m.packages = append(m.packages, strings.Join(f[1:], " "))
			m.loader, m.max = "grub", 1
			if strings.HasPrefix(f[1], "u-boot") {
				m.loader, m.max = "uboot", 3
			}
		case "ubootenv":
			off, _ := strconv.ParseInt(f[1], 10, 64)
			size, _ := strconv.ParseInt(f[2], 10, 64)
			m.ubootEnv = [2]int64{off, size}
		}
	}
	m.manifest = lines
	machinesMu.Lock()
	machines[arch] = m
	machinesMu.Unlock()
	return m
}

// disk is one test device's disk: a copy of the factory disk.
type disk struct {
	m    *machine
	path string
	dir  string // artifacts of the scenario
	n    int    // power-ons so far
}

func (m *machine) newDisk(t *testing.T) *disk {
	t.Helper()
	return m.diskFrom(t, filepath.Join(m.dir, "disk.img"), "")
}

// diskFrom is a test device whose disk is a copy of img (the factory disk,
// or one saved after a common prefix of power-ons); its serial logs go to
// the test's artifact directory, or a subdirectory name of it.
func (m *machine) diskFrom(t *testing.T, img, name string) *disk {
	t.Helper()
	dir := filepath.Join(artifacts, m.arch, strings.ReplaceAll(t.Name(), "/", "_"), name)
	if name == "" {
		os.RemoveAll(dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "disk.img")
	run(t, "cp", "--sparse=always", img, path)
	return &disk{m: m, path: path, dir: dir}
}

// save copies the disk as it is between power-ons, for diskFrom.
func (d *disk) save(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), fmt.Sprintf("saved-%02d.img", d.n))
	run(t, "cp", "--sparse=always", d.path, path)
	return path
}

// bundleDisk makes the second virtual disk: an ext4 file system with the
// bundle and a run id, so that the guest installs it once per power-on
// (its init remembers the last run id on the state partition).
func (d *disk) bundleDisk(t *testing.T, bundle string) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "bundle")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(src, "bundle.rbundle")
	if err := os.Link(bundle, dst); err != nil {
		run(t, "cp", bundle, dst)
	}
	id := fmt.Sprintf("%s-%d-%d", filepath.Base(d.dir), d.n, time.Now().UnixNano())
	if err := os.WriteFile(filepath.Join(src, "run-id"), []byte(id+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(bundle)
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "bundle.img")
	mib := fi.Size()>>20 + 16
	run(t, "mkfs.ext4", "-q", "-F", "-L", "bundle", "-d", src, img, fmt.Sprintf("%dM", mib))
	return img
}

// line is one line of the serial console and when it arrived.
type line struct {
	at   time.Duration
	text string
}

// power is what one power-on showed on the serial console.
type power struct {
	lines  []line
	killed bool
	took   time.Duration
	log    string // the artifact
}

// cut says when to pull the plug: delay after the first line matching at.
// With mayFinish the guest may power off first (the cut came too late to
// matter); otherwise that fails the test.
type cut struct {
	at        *regexp.Regexp
	delay     time.Duration
	mayFinish bool
}

// powerOn starts QEMU on the disk (and the bundle, when not empty) and
// waits until the guest powers off, or kills QEMU as the cut says: a
// power cut, nothing flushed that the guest had not written.
func (d *disk) powerOn(t *testing.T, bundle string, c *cut) *power {
	t.Helper()
	return d.run(t, bundle, c, false)
}

// powerOnUntilReset is powerOn with QEMU stopped at the guest's first
// reboot (-no-reboot): the disk is left as the next boot would find it,
// as after a reset, which writes nothing either.
func (d *disk) powerOnUntilReset(t *testing.T, bundle string) *power {
	t.Helper()
	return d.run(t, bundle, nil, true)
}

func (d *disk) run(t *testing.T, bundle string, c *cut, noReboot bool) *power {
	t.Helper()
	d.n++
	var bdisk string
	if bundle != "" {
		bdisk = d.bundleDisk(t, bundle)
	}
	name := fmt.Sprintf("%02d", d.n)
	if bundle != "" {
		name += "-" + strings.TrimSuffix(filepath.Base(bundle), ".rbundle")
	}
	if c != nil {
		name += "-cut"
	}
	if noReboot {
		name += "-until-reset"
	}
	logPath := filepath.Join(d.dir, name+".serial.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()

	args := qemuArgs(d.m.arch, d.path, bdisk)
	if noReboot {
		args = append(args, "-no-reboot")
	}
	cmd := exec.Command(args[0], args[1:]...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &power{log: logPath}
	var mu sync.Mutex
	done := make(chan struct{})
	cutNow := make(chan struct{}, 1)
	go func() {
		defer close(done)
		sc := bufio.NewScanner(io.TeeReader(stdout, logf))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		armed := c != nil
		for sc.Scan() {
			text := strings.TrimRight(sc.Text(), "\r")
			mu.Lock()
			p.lines = append(p.lines, line{time.Since(start), text})
			mu.Unlock()
			if armed && c.at.MatchString(text) {
				armed = false
				time.AfterFunc(c.delay, func() { cutNow <- struct{}{} })
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { <-done; exited <- cmd.Wait() }()

	timer := time.NewTimer(powerTimeout)
	defer timer.Stop()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("power-on %d: qemu: %v (serial log %s)", d.n, err, logPath)
		}
	case <-cutNow:
		cmd.Process.Kill()
		<-exited
		p.killed = true
	case <-timer.C:
		cmd.Process.Kill()
		<-exited
		t.Fatalf("power-on %d: the guest did not power off within %v (serial log %s)", d.n, powerTimeout, logPath)
	}
	p.took = time.Since(start)
	figuresMu.Lock()
	powerOns[d.m.arch]++
	qemuTimes[d.m.arch] += p.took
	figuresMu.Unlock()
	if c != nil && !p.killed && !c.mayFinish {
		t.Fatalf("power-on %d: the guest powered off before the cut at %q + %v (serial log %s)", d.n, c.at, c.delay, logPath)
	}
	p.checkBootTimes(t, d.m.arch, d.n)
	t.Logf("power-on %d: %d boot(s) %v in %.1fs%s; serial log %s", d.n, len(p.boots()), p.boots(), p.took.Seconds(),
		map[bool]string{true: ", cut", false: ""}[p.killed], logPath)
	return p
}

func qemuArgs(arch, disk, bundle string) []string {
	var args []string
	common := []string{"-m", "512", "-smp", "1", "-display", "none", "-serial", "stdio", "-no-user-config", "-nodefaults"}
	switch arch {
	case "x86_64":
		args = append([]string{"qemu-system-x86_64", "-machine", "pc", "-cpu", "max"}, common...)
		args = append(args, "-drive", "file="+disk+",format=raw,if=virtio")
		if bundle != "" {
			args = append(args, "-drive", "file="+bundle+",format=raw,if=virtio,readonly=on")
		}
	case "arm64":
		args = append([]string{"qemu-system-aarch64", "-machine", "virt", "-cpu", "cortex-a57",
			"-bios", "/usr/lib/u-boot/qemu_arm64/u-boot.bin"}, common...)
		args = append(args, "-drive", "if=none,id=d0,format=raw,file="+disk, "-device", "virtio-blk-pci,drive=d0")
		if bundle != "" {
			args = append(args, "-drive", "if=none,id=d1,format=raw,readonly=on,file="+bundle, "-device", "virtio-blk-pci,drive=d1")
		}
	}
	return args
}

var (
	bootedRE = regexp.MustCompile(`RAMPART-E2E: booted slot=([AB]) release=(\S+)`)
	resetRE  = regexp.MustCompile(`reboot: Restarting system|Rebooting in \d+ seconds|rampart: no slot left to try`)
)

// boot is one start of the guest's init.
type boot struct{ slot, release string }

func (b boot) String() string { return b.slot + ":" + b.release }

func (p *power) boots() []boot {
	var out []boot
	for _, l := range p.lines {
		if m := bootedRE.FindStringSubmatch(l.text); m != nil {
			out = append(out, boot{m[1], m[2]})
		}
	}
	return out
}

// checkBootTimes measures every boot, from the power-on or the reset
// before it to the guest's init, and holds it to bootTimeout.
func (p *power) checkBootTimes(t *testing.T, arch string, n int) {
	t.Helper()
	var from time.Duration
	for _, l := range p.lines {
		switch {
		case resetRE.MatchString(l.text):
			from = l.at
		case bootedRE.MatchString(l.text):
			d := l.at - from
			figuresMu.Lock()
			bootTimes[arch] = append(bootTimes[arch], d)
			figuresMu.Unlock()
			if d > bootTimeout {
				t.Errorf("power-on %d: a boot took %.1fs to reach init, more than %v", n, d.Seconds(), bootTimeout)
			}
		}
	}
}

// until is the part of the power-on before the first line matching re
// (all of it when none does): what a power-on showed before, say, the
// install it went on to.
func (p *power) until(re string) *power {
	r := regexp.MustCompile(re)
	q := *p
	for i, l := range p.lines {
		if r.MatchString(l.text) {
			q.lines = p.lines[:i]
			break
		}
	}
	return &q
}

func (p *power) has(re string) bool {
	r := regexp.MustCompile(re)
	for _, l := range p.lines {
		if r.MatchString(l.text) {
			return true
		}
	}
	return false
}

// when returns how long after the power-on the first line matching re came.
func (p *power) when(re string) (time.Duration, bool) {
	r := regexp.MustCompile(re)
	for _, l := range p.lines {
		if r.MatchString(l.text) {
			return l.at, true
		}
	}
	return 0, false
}

// line returns the first line matching re.
func (p *power) line(re string) (string, bool) {
	r := regexp.MustCompile(re)
	for _, l := range p.lines {
		if r.MatchString(l.text) {
			return l.text, true
		}
	}
	return "", false
}

func (p *power) must(t *testing.T, res ...string) {
	t.Helper()
	for _, re := range res {
		if !p.has(re) {
			t.Fatalf("serial console lacks %q (log %s)", re, p.log)
		}
	}
}

func (p *power) mustNot(t *testing.T, res ...string) {
	t.Helper()
	for _, re := range res {
		if p.has(re) {
			t.Fatalf("serial console shows %q (log %s)", re, p.log)
		}
	}
}

func (p *power) wantBoots(t *testing.T, want ...string) {
	t.Helper()
	var got []string
	for _, b := range p.boots() {
		got = append(got, b.String())
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("boots %v, want %v (log %s)", got, want, p.log)
	}
}

// --- reading the disk after QEMU exits ---

// part copies partition i (0 boot, 1 slot A, 2 slot B, 3 state) out of
// the disk into a file.
func (d *disk) part(t *testing.T, i int) string {
	t.Helper()
	f, err := os.Open(d.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := filepath.Join(t.TempDir(), fmt.Sprintf("part%d.img", i+1))
	o, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if _, err := io.Copy(o, io.NewSectionReader(f, d.m.parts[i][0], d.m.parts[i][1])); err != nil {
		t.Fatal(err)
	}
	return out
}

// debugfsCat reads a file from an ext4 image.
func debugfsCat(t *testing.T, img, path string) []byte {
	t.Helper()
	cmd := exec.Command("debugfs", "-R", "cat "+path, img)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("debugfs cat %s: %v %s", path, err, errb.String())
	}
	return out.Bytes()
}

// grubenv reads the grubenv with grub-editenv.
func (d *disk) grubenv(t *testing.T) map[string]string {
	t.Helper()
	env := filepath.Join(t.TempDir(), "grubenv")
	if err := os.WriteFile(env, debugfsCat(t, d.part(t, 0), "/grub/grubenv"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := run(t, "grub-editenv", env, "list")
	vars := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			vars[k] = v
		}
	}
	return vars
}

// ubootenv reads the boot variables with libubootenv's fw_printenv, as an
// operator would on the device.
func (d *disk) ubootenv(t *testing.T) map[string]string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "fw_env.config")
	conf := fmt.Sprintf("%s %#x %#x\n", d.path, d.m.ubootEnv[0], d.m.ubootEnv[1])
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out := run(t, "fw_printenv", "-c", cfg)
	vars := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			vars[k] = v
		}
	}
	return vars
}

// full stands for the attempts a confirmed slot gets (1 GRUB, 3 U-Boot).
const full = -1

// wantBoot checks the boot variables, read by the bootloader's own tools,
// against the slots that the next power-on may boot and their attempts
// left, in order: wantBoot(t, "B", full) is slot B alone, confirmed. For
// GRUB a slot may boot when it is OK (x_OK=1) and has its try when it was
// not tried (x_TRY=0); for U-Boot when it is in BOOT_ORDER with
// BOOT_x_LEFT attempts.
func (d *disk) wantBoot(t *testing.T, pairs ...any) {
	t.Helper()
	var want []string
	for i := 0; i < len(pairs); i += 2 {
		n := pairs[i+1].(int)
		if n == full {
			n = d.m.max
		}
		want = append(want, fmt.Sprintf("%s:%d", pairs[i], n))
	}
	got, vars := d.bootable(t)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("boot variables %v read as %v, want %v", vars, got, want)
	}
	t.Logf("boot variables: %v", vars)
}

// trialArmed reports whether the boot variables hold B's trial before A:
// what an install leaves once it armed the trial, whether or not its log
// line reached the serial console before a cut.
func (d *disk) trialArmed(t *testing.T) bool {
	t.Helper()
	got, _ := d.bootable(t)
	return strings.Join(got, " ") == fmt.Sprintf("B:1 A:%d", d.m.max)
}

// bootable reads the boot variables with the bootloader's own tools and
// returns the slots the next power-on may boot, in order, as SLOT:LEFT.
func (d *disk) bootable(t *testing.T) (got []string, vars map[string]string) {
	t.Helper()
	if d.m.loader == "grub" {
		vars = d.grubenv(t)
		for _, s := range strings.Fields(vars["ORDER"]) {
			if vars[s+"_OK"] == "1" {
				left := 0
				if vars[s+"_TRY"] == "0" {
					left = 1
				}
				got = append(got, fmt.Sprintf("%s:%d", s, left))
			}
		}
	} else {
		vars = d.ubootenv(t)
		for _, s := range strings.Fields(vars["BOOT_ORDER"]) {
			got = append(got, s+":"+vars["BOOT_"+s+"_LEFT"])
		}
	}
	return got, vars
}

// agentState is the part of the agent's state.json the scenarios judge.
type agentState struct {
	Slot    string `json:"slot"`
	Running *struct {
		Version string `json:"version"`
	} `json:"running"`
	SecurityCounter uint64 `json:"security_counter"`
	Pending         *struct {
		Version string `json:"version"`
		Slot    string `json:"slot"`
		Phase   string `json:"phase"`
	} `json:"pending"`
	Failed map[string]string `json:"failed"`
	Outbox []struct {
		Status  string `json:"status"`
		Reason  string `json:"reason"`
		Version string `json:"version"`
	} `json:"outbox"`
}

func (d *disk) state(t *testing.T) *agentState {
	t.Helper()
	b := debugfsCat(t, d.part(t, 3), "/rampart/state.json")
	var st agentState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("state.json: %v\n%s", err, b)
	}
	return &st
}

func (st *agentState) running() string {
	if st.Running == nil {
		return "factory"
	}
	return st.Running.Version
}

// reported returns whether the outbox holds a report with this status,
// reason and version.
func (st *agentState) reported(status, reason, version string) bool {
	for _, r := range st.Outbox {
		if r.Status == status && r.Reason == reason && r.Version == version {
			return true
		}
	}
	return false
}

// hasReason returns whether the outbox holds any report with this reason.
func (st *agentState) hasReason(reason string) bool {
	for _, r := range st.Outbox {
		if r.Reason == reason {
			return true
		}
	}
	return false
}

// slot returns the release whose image slot i (1 A, 2 B) holds, "empty"
// for zeros, or "unknown".
func (d *disk) slot(t *testing.T, s string) string {
	t.Helper()
	i := map[string]int{"A": 1, "B": 2}[s]
	f, err := os.Open(d.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := io.NewSectionReader(f, d.m.parts[i][0], d.m.parts[i][1])
	var size int64
	for _, rel := range d.m.releases {
		size = rel.size
	}
	h := sha256.New()
	zero := true
	buf := make([]byte, 1<<20)
	for n := int64(0); n < size; {
		k, err := r.Read(buf)
		if k > 0 {
			h.Write(buf[:k])
			zero = zero && bytes.Count(buf[:k], []byte{0}) == k
			n += int64(k)
		}
		if err != nil {
			break
		}
	}
	sum := hex.EncodeToString(h.Sum(nil))
	for v, rel := range d.m.releases {
		if rel.sha256 == sum {
			return v
		}
	}
	if zero {
		return "empty"
	}
	return "unknown"
}

func (d *disk) wantSlots(t *testing.T, a, b string) {
	t.Helper()
	if got := d.slot(t, "A"); got != a {
		t.Fatalf("slot A holds %s, want %s", got, a)
	}
	if got := d.slot(t, "B"); got != b {
		t.Fatalf("slot B holds %s, want %s", got, b)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
