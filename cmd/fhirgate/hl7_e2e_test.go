package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fhirgate/fhirgate/internal/database/databasetest"
	"github.com/fhirgate/fhirgate/internal/mllp"
)

// adt builds an ADT^A01 for a patient with the given MRN and control id.
func adt(controlID, mrn string) []byte {
	return []byte(strings.Join([]string{
		"MSH|^~\\&|KILLTEST|HOSP|FHIRGATE|FG|20240101120000+0000||ADT^A01^ADT_A01|" + controlID + "|P|2.5.1",
		"EVN|A01|20240101120000+0000",
		"PID|1||" + mrn + "^^^HOSP^MR||Doe^Jane||19800101|F",
		"PV1|1|I|W^1^1||||||||||||||||V" + mrn,
	}, "\r") + "\r")
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startGateway runs the real binary and waits for its MLLP port.
// dataDir holds the gateway's keys (PHI keyring, dev token key, audit
// signing key): a restart must get the same one, or it could not read the
// data it wrote.
func startGateway(t *testing.T, bin, dbURL, httpAddr, mllpAddr, dataDir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "FHIRGATE_ADDR="+httpAddr, "FHIRGATE_MLLP_ADDR="+mllpAddr,
		"FHIRGATE_MAPPINGS="+filepath.Join("..", "..", "mappings"), "FHIRGATE_LOG_LEVEL=warn",
		"FHIRGATE_PHI_POLICY="+filepath.Join("..", "..", "policies", "phi.yaml"), "FHIRGATE_DATA_DIR="+dataDir,
		"FHIRGATE_POLICIES="+filepath.Join("..", "..", "policies"))
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", mllpAddr, 200*time.Millisecond); err == nil {
			c.Close()
			return cmd
		}
		time.Sleep(100 * time.Millisecond)
	}
	cmd.Process.Kill()
	t.Fatalf("gateway did not open %s", mllpAddr)
	return nil
}

// TestKillLosesNothingAcked sends messages from several MLLP connections,
// SIGKILLs the gateway mid-stream, restarts it, and checks that every
// message that got an AA is archived with its resources.
func TestKillLosesNothingAcked(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the gateway binary")
	}
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "fhirgate")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	dbURL := databasetest.NewURL(t)
	httpAddr, mllpAddr := freePort(t), freePort(t)
	dataDir := t.TempDir()
	gw := startGateway(t, bin, dbURL, httpAddr, mllpAddr, dataDir)

	var mu sync.Mutex
	var acked []string
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c, err := mllp.Dial(ctx, mllpAddr, nil)
			if err != nil {
				return
			}
			defer c.Close()
			for i := 0; ; i++ {
				cid := fmt.Sprintf("K%d-%d", w, i)
				ack, err := c.Send(ctx, adt(cid, fmt.Sprintf("M%d-%d", w, i)))
				if err != nil {
					return // the gateway died
				}
				if strings.Contains(string(ack), "MSA|AA|"+cid) {
					mu.Lock()
					acked = append(acked, cid)
					mu.Unlock()
				}
			}
		}(w)
	}
	// Let some messages through, then kill without warning.
	for {
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 40 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("too few messages were acknowledged before the deadline")
		}
	}
	if err := gw.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	gw.Wait()
	wg.Wait()

	gw = startGateway(t, bin, dbURL, httpAddr, mllpAddr, dataDir)
	defer func() {
		gw.Process.Signal(syscall.SIGTERM)
		exited := make(chan struct{})
		go func() { gw.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(45 * time.Second):
			gw.Process.Kill()
			t.Errorf("the gateway did not stop within 45 s of SIGTERM")
		}
	}()

	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var missing []string
	for _, cid := range acked {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM hl7_messages m
			JOIN resources r ON r.tenant = m.tenant AND r.type = 'Provenance' AND r.id = m.provenance_id
			WHERE m.control_id = $1`, cid).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			missing = append(missing, cid)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d acknowledged messages are missing after the kill: %v", len(missing), len(acked), missing)
	}
	t.Logf("%d messages acknowledged before the kill; all archived with their Provenance", len(acked))

	// A re-send of an acknowledged message after the restart gets the same
	// ACK and creates nothing.
	var before int
	conn.QueryRow(ctx, `SELECT count(*) FROM resources`).Scan(&before)
	c, err := mllp.Dial(ctx, mllpAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w, i := 0, 0
	fmt.Sscanf(acked[0], "K%d-%d", &w, &i)
	ack, err := c.Send(ctx, adt(acked[0], fmt.Sprintf("M%d-%d", w, i)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ack), "MSA|AA|"+acked[0]) {
		t.Errorf("re-send got %q, want the original AA", ack)
	}
	var after int
	conn.QueryRow(ctx, `SELECT count(*) FROM resources`).Scan(&after)
	if after != before {
		t.Errorf("a duplicate re-send changed the resource count from %d to %d", before, after)
	}
}
