// Command kubelet-client calls a CSI node plugin the way the kubelet does, and
// serves a no-op CSI plugin to compare against.
//
//	kubelet-client client     -endpoint SOCK -kubelet-root DIR -pairs N [-callers C] [-warmup W] [-type T] [-samples]
//	kubelet-client serve-noop -endpoint SOCK
//	kubelet-client probe-wait -endpoint SOCK [-since-unix-nano NS | -log FILE -- COMMAND ARGS...]
//
// client: for each of N volumes, NodePublishVolume then NodeUnpublishVolume,
// each over a connection of its own (dial, one call, close), as the
// kubelet's CSI client does; C callers at once. The pod directories are laid
// out before the clock starts and removed after it stops. Prints one JSON
// object; any failed call makes the exit status 1.
//
// serve-noop: csi.v1 Identity and Node on a Unix socket, every answer an
// empty message: the transport's floor.
//
// probe-wait: dial until Probe answers ready, as a new connection per try.
// With a command, starts it first, times from just before the start and then
// stops it (SIGTERM); without, times from -since-unix-nano.
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

const (
	driverName = "k8s.csi.datadoghq.com"
	// The kubelet's inline-volume directory, relative to a pod's directory.
	csiPluginDir = "volumes/kubernetes.io~csi"
)

// podInfoKeys are the attributes the kubelet adds for a CSIDriver with
// podInfoOnMount: true, in the order podInfo fills them.
var podInfoKeys = [...]string{
	"csi.storage.k8s.io/pod.name",
	"csi.storage.k8s.io/pod.namespace",
	"csi.storage.k8s.io/pod.uid",
	"csi.storage.k8s.io/serviceAccount.name",
	"csi.storage.k8s.io/ephemeral",
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: kubelet-client client|serve-noop|probe-wait [flags]")
	}
	var err error
	switch os.Args[1] {
	case "client":
		err = runClient(os.Args[2:])
	case "serve-noop":
		err = serveNoop(os.Args[2:])
	case "probe-wait":
		err = probeWait(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q: want client, serve-noop or probe-wait", os.Args[1])
	}
	if err != nil {
		fail(err.Error())
	}
}

func fail(message string) {
	fmt.Fprintln(os.Stderr, "kubelet-client:", message)
	os.Exit(1)
}

// dial opens a connection as the kubelet's CSI client does: grpc.Dial on the
// socket path, no transport security, a Unix dialer. Non-blocking: the call
// made on it waits for the connection.
func dial(endpoint string) (*grpc.ClientConn, error) {
	return grpc.Dial(endpoint, //nolint:staticcheck // the kubelet's own call
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, target string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", target)
		}))
}

// oneCall dials, makes one Node call and closes, all of it the caller's cost.
func oneCall(endpoint string, timeout time.Duration, call func(context.Context, csi.NodeClient) error) error {
	conn, err := dial(endpoint)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return call(ctx, csi.NewNodeClient(conn))
}

// ---- client ----

type volume struct {
	podUID    string
	podDir    string
	volumeDir string
	publish   *csi.NodePublishVolumeRequest
	unpublish *csi.NodeUnpublishVolumeRequest
}

type clientConfig struct {
	endpoint, kubeletRoot, volumeType, volumeName, node string
	pairs, callers, warmup                              int
	timeout                                             time.Duration
	samples                                             bool
}

func newUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// prepareVolume does what the kubelet does before NodePublishVolume for an
// inline volume: the volume's directory (0750) with vol_data.json in it.
func prepareVolume(c *clientConfig) (volume, error) {
	uid := newUID()
	sum := sha256.Sum256([]byte(uid + c.volumeName))
	id := "csi-" + hex.EncodeToString(sum[:])
	podDir := filepath.Join(c.kubeletRoot, "pods", uid)
	volumeDir := filepath.Join(podDir, csiPluginDir, c.volumeName)
	if err := os.MkdirAll(volumeDir, 0o750); err != nil {
		return volume{}, err
	}
	data, err := json.Marshal(map[string]string{
		"specVolID": c.volumeName, "volumeHandle": id, "driverName": driverName,
		"nodeName": c.node, "volumeLifecycleMode": "Ephemeral",
	})
	if err != nil {
		return volume{}, err
	}
	if err := os.WriteFile(filepath.Join(volumeDir, "vol_data.json"), data, 0o640); err != nil {
		return volume{}, err
	}
	attributes := map[string]string{"type": c.volumeType}
	for i, value := range [...]string{"app", "default", uid, "default", "true"} {
		attributes[podInfoKeys[i]] = value
	}
	target := filepath.Join(volumeDir, "mount")
	return volume{
		podUID: uid, podDir: podDir, volumeDir: volumeDir,
		publish: &csi.NodePublishVolumeRequest{
			VolumeId:   id,
			TargetPath: target,
			VolumeCapability: &csi.VolumeCapability{
				AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
				AccessMode: &csi.VolumeCapability_AccessMode{
					Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
				},
			},
			Readonly:      false,
			VolumeContext: attributes,
		},
		unpublish: &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target},
	}, nil
}

// removeVolume is the kubelet's cleanup once the pod is gone, one level at a
// time and never recursively: a target the plugin left mounted makes it fail
// (EBUSY) rather than delete through the mount.
func removeVolume(v volume) error {
	steps := []string{
		filepath.Join(v.volumeDir, "mount"), filepath.Join(v.volumeDir, "vol_data.json"), v.volumeDir,
		filepath.Dir(v.volumeDir), filepath.Join(v.podDir, "volumes"), v.podDir,
	}
	for _, path := range steps {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("cleaning up after unpublish: %w", err)
		}
	}
	return nil
}

type failures struct {
	mu     sync.Mutex
	count  int
	sample []string
}

func (f *failures) add(what string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.count++
	if len(f.sample) < 5 {
		f.sample = append(f.sample, what+": "+err.Error())
	}
}

// pair publishes and unpublishes one volume, each call over its own connection.
func pair(c *clientConfig, v volume, bad *failures) (publish, unpublish time.Duration, ok bool) {
	started := time.Now()
	err := oneCall(c.endpoint, c.timeout, func(ctx context.Context, node csi.NodeClient) error {
		_, err := node.NodePublishVolume(ctx, v.publish)
		return err
	})
	published := time.Now()
	ok = err == nil
	if err != nil {
		bad.add("NodePublishVolume "+v.publish.TargetPath, err)
	}
	// Unpublished even after a failed publish, as the kubelet cleans up.
	err = oneCall(c.endpoint, c.timeout, func(ctx context.Context, node csi.NodeClient) error {
		_, err := node.NodeUnpublishVolume(ctx, v.unpublish)
		return err
	})
	done := time.Now()
	if err != nil {
		ok = false
		bad.add("NodeUnpublishVolume "+v.unpublish.TargetPath, err)
	}
	return published.Sub(started), done.Sub(published), ok
}

type timings struct {
	publish, unpublish, pair []float64 // seconds, by volume index
	ok                       []bool
}

// runPairs makes the pairs with c.callers goroutines taking volumes in turn.
func runPairs(c *clientConfig, volumes []volume, bad *failures) (timings, time.Duration) {
	t := timings{make([]float64, len(volumes)), make([]float64, len(volumes)),
		make([]float64, len(volumes)), make([]bool, len(volumes))}
	var next atomic.Int64
	var wg sync.WaitGroup
	started := time.Now()
	for range c.callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(volumes) {
					return
				}
				pub, unpub, ok := pair(c, volumes[i], bad)
				t.publish[i], t.unpublish[i] = pub.Seconds(), unpub.Seconds()
				t.pair[i], t.ok[i] = (pub + unpub).Seconds(), ok
			}
		}()
	}
	wg.Wait()
	return t, time.Since(started)
}

// percentile is nearest-rank, like the benchmark's Python side: always a real sample.
func percentile(samples []float64, pct float64) float64 {
	if len(samples) == 0 {
		return 0
	}
	ordered := append([]float64(nil), samples...)
	sort.Float64s(ordered)
	rank := max(1, min(int(math.Ceil(pct/100*float64(len(ordered)))), len(ordered)))
	return ordered[rank-1]
}

type summary struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func summarize(seconds []float64) summary {
	ms := func(s float64) float64 { return s * 1e3 }
	return summary{ms(percentile(seconds, 50)), ms(percentile(seconds, 99)), ms(percentile(seconds, 100))}
}

type clientReport struct {
	Endpoint       string   `json:"endpoint"`
	VolumeType     string   `json:"volume_type"`
	Pairs          int      `json:"pairs"`
	Callers        int      `json:"callers"`
	Warmup         int      `json:"warmup"`
	Failures       int      `json:"failures"`
	FailureSample  []string `json:"failure_sample,omitempty"`
	Seconds        float64  `json:"seconds"`
	PairsPerSecond float64  `json:"pairs_per_second"`
	PairMs         summary  `json:"pair_ms"`
	PublishMs      summary  `json:"publish_ms"`
	UnpublishMs    summary  `json:"unpublish_ms"`
	// With -samples: every timed pair's times, in seconds.
	PairSeconds      []float64 `json:"pair_seconds,omitempty"`
	PublishSeconds   []float64 `json:"publish_seconds,omitempty"`
	UnpublishSeconds []float64 `json:"unpublish_seconds,omitempty"`
}

func parseClient(args []string) (*clientConfig, error) {
	c := &clientConfig{}
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.StringVar(&c.endpoint, "endpoint", "", "the plugin's Unix socket path")
	fs.StringVar(&c.kubeletRoot, "kubelet-root", "", "the kubelet's root directory (pods/ goes below it)")
	fs.StringVar(&c.volumeType, "type", "DSDSocketDirectory", "the volume's type attribute")
	fs.StringVar(&c.volumeName, "volume-name", "datadog", "the pod's name for the volume")
	fs.StringVar(&c.node, "node", "test-node", "the node name written to vol_data.json")
	fs.IntVar(&c.pairs, "pairs", 100, "timed publish+unpublish pairs")
	fs.IntVar(&c.callers, "callers", 1, "concurrent callers")
	fs.IntVar(&c.warmup, "warmup", 0, "untimed pairs first, with the same callers")
	fs.DurationVar(&c.timeout, "call-timeout", 2*time.Minute, "deadline of each call (the kubelet's)")
	fs.BoolVar(&c.samples, "samples", false, "include every timed pair's times (seconds) in the output")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case c.endpoint == "" || c.kubeletRoot == "":
		return nil, errors.New("client: -endpoint and -kubelet-root are required")
	case c.pairs < 1 || c.callers < 1 || c.warmup < 0:
		return nil, errors.New("client: -pairs and -callers must be at least 1, -warmup at least 0")
	}
	return c, nil
}

func prepareVolumes(c *clientConfig, count int) ([]volume, error) {
	volumes := make([]volume, count)
	for i := range volumes {
		v, err := prepareVolume(c)
		if err != nil {
			return nil, fmt.Errorf("laying out pod directories: %w", err)
		}
		volumes[i] = v
	}
	return volumes, nil
}

// cleanUp removes the directories of the volumes whose pair succeeded;
// those of a failed pair stay for a look (and may still be mounted).
func cleanUp(volumes []volume, ok []bool, bad *failures) {
	for i, v := range volumes {
		if ok[i] {
			if err := removeVolume(v); err != nil {
				bad.add("after NodeUnpublishVolume "+v.unpublish.TargetPath, err)
			}
		}
	}
}

func runClient(args []string) error {
	c, err := parseClient(args)
	if err != nil {
		return err
	}
	bad := &failures{}
	if c.warmup > 0 {
		volumes, err := prepareVolumes(c, c.warmup)
		if err != nil {
			return err
		}
		t, _ := runPairs(c, volumes, bad)
		cleanUp(volumes, t.ok, bad)
	}
	volumes, err := prepareVolumes(c, c.pairs)
	if err != nil {
		return err
	}
	t, elapsed := runPairs(c, volumes, bad)
	cleanUp(volumes, t.ok, bad)

	report := clientReport{
		Endpoint: c.endpoint, VolumeType: c.volumeType, Pairs: c.pairs, Callers: c.callers,
		Warmup: c.warmup, Failures: bad.count, FailureSample: bad.sample, Seconds: elapsed.Seconds(),
		PairsPerSecond: float64(c.pairs) / elapsed.Seconds(),
		PairMs:         summarize(t.pair), PublishMs: summarize(t.publish), UnpublishMs: summarize(t.unpublish),
	}
	if c.samples {
		report.PairSeconds, report.PublishSeconds, report.UnpublishSeconds = t.pair, t.publish, t.unpublish
	}
	if err := json.NewEncoder(os.Stdout).Encode(report); err != nil {
		return err
	}
	if bad.count > 0 {
		return fmt.Errorf("%d calls failed against %s (warm-up included); first: %v",
			bad.count, c.endpoint, bad.sample)
	}
	return nil
}

// ---- serve-noop ----

type noopIdentity struct {
	csi.UnimplementedIdentityServer
}

func (noopIdentity) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: "noop.bench.csi", VendorVersion: "0.0.0"}, nil
}

func (noopIdentity) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest,
) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{}, nil
}

func (noopIdentity) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil
}

type noopNode struct {
	csi.UnimplementedNodeServer
}

func (noopNode) NodePublishVolume(context.Context, *csi.NodePublishVolumeRequest,
) (*csi.NodePublishVolumeResponse, error) {
	return &csi.NodePublishVolumeResponse{}, nil
}

func (noopNode) NodeUnpublishVolume(context.Context, *csi.NodeUnpublishVolumeRequest,
) (*csi.NodeUnpublishVolumeResponse, error) {
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

func (noopNode) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: "test-node"}, nil
}

func serveNoop(args []string) error {
	fs := flag.NewFlagSet("serve-noop", flag.ContinueOnError)
	endpoint := fs.String("endpoint", "", "the Unix socket path to serve on (must not exist)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *endpoint == "" {
		return errors.New("serve-noop: -endpoint is required")
	}
	listener, err := net.Listen("unix", *endpoint)
	if err != nil {
		return err
	}
	server := grpc.NewServer()
	csi.RegisterIdentityServer(server, noopIdentity{})
	csi.RegisterNodeServer(server, noopNode{})
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		server.Stop() // also removes the socket file
	}()
	return server.Serve(listener)
}

// ---- probe-wait ----

// probeReady makes one Probe over a new connection; absent readiness means ready.
func probeReady(endpoint string) bool {
	conn, err := dial(endpoint)
	if err != nil {
		return false
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	response, err := csi.NewIdentityClient(conn).Probe(ctx, &csi.ProbeRequest{})
	if err != nil {
		return false
	}
	return response.GetReady() == nil || response.GetReady().GetValue()
}

type probeReport struct {
	ReadySeconds float64 `json:"ready_seconds"`
	Attempts     int     `json:"attempts"`
	ExitCode     *int    `json:"exit_code,omitempty"` // of the command started, after SIGTERM
}

// waitReady probes until ready; exited, if not nil, reports a started process's end.
func waitReady(endpoint string, deadline time.Time, exited <-chan error) (int, error) {
	attempts := 0
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return attempts, fmt.Errorf("the command exited before it was ready: %v", err)
		default:
		}
		// Dial only once the socket exists: the kubelet learns of a plugin's socket by watching for it.
		if _, err := os.Stat(endpoint); err == nil {
			attempts++
			if probeReady(endpoint) {
				return attempts, nil
			}
		}
		time.Sleep(time.Millisecond)
	}
	return attempts, fmt.Errorf("%s not ready before the deadline", endpoint)
}

func stopCommand(cmd *exec.Cmd, exited <-chan error) int {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(35 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
	return cmd.ProcessState.ExitCode()
}

func probeWait(args []string) error {
	fs := flag.NewFlagSet("probe-wait", flag.ContinueOnError)
	endpoint := fs.String("endpoint", "", "the plugin's Unix socket path")
	since := fs.Int64("since-unix-nano", 0, "time from this instant (ns since the epoch) when no command is given")
	logPath := fs.String("log", "", "the started command's stdout and stderr go to this file")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	command := fs.Args()
	if *endpoint == "" || (len(command) == 0) == (*since == 0) {
		return errors.New("probe-wait: -endpoint and either -since-unix-nano or a command after -- are required")
	}
	if len(command) == 0 {
		started := time.Unix(0, *since)
		attempts, err := waitReady(*endpoint, started.Add(*timeout), nil)
		if err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(probeReport{time.Since(started).Seconds(), attempts, nil})
	}
	return spawnAndProbe(*endpoint, *logPath, *timeout, command)
}

func spawnAndProbe(endpoint, logPath string, timeout time.Duration, command []string) error {
	cmd := exec.Command(command[0], command[1:]...)
	if logPath != "" {
		log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer log.Close()
		cmd.Stdout, cmd.Stderr = log, log
	}
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	attempts, err := waitReady(endpoint, started.Add(timeout), exited)
	ready := time.Since(started)
	if err != nil {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
		return fmt.Errorf("%v (log: %s)", err, logPath)
	}
	code := stopCommand(cmd, exited)
	return json.NewEncoder(os.Stdout).Encode(probeReport{ready.Seconds(), attempts, &code})
}
