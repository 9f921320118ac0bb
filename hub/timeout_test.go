package hub

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/passerelle/passerelle/configs"
)

// startHubWithTimeouts is startHub with the HTTP server's read and idle timeouts shortened.
func startHubWithTimeouts(t *testing.T, cfg *configs.Config, read, idle time.Duration) *runningHub {
	t.Helper()
	return startHubWith(t, cfg, testLogger(t), func(h *Hub) { h.readTimeout, h.idleTimeout = read, idle })
}

// waitClosed reads from conn until the server closes it; it fails if that takes longer than within.
func waitClosed(t *testing.T, conn net.Conn, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = conn.SetReadDeadline(start.Add(within))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("server kept the connection open for more than %v", within)
	}
	return time.Since(start)
}

// TestSlowBodyConnectionClosed: a client that sends headers and part of a body, then stalls (slow-loris), has
// its connection closed after the read timeout; an idle keep-alive connection is closed after the idle
// timeout; and a /sync long-poll longer than the read timeout still answers normally.
func TestSlowBodyConnectionClosed(t *testing.T) {
	rh := startHubWithTimeouts(t, testConfig(t), time.Second, 2*time.Second)
	addr := rh.Addr().String()

	t.Run("stalled body", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = io.WriteString(conn, "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: x\r\n"+
			"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\":")
		if err != nil {
			t.Fatal(err)
		}
		if took := waitClosed(t, conn, 5*time.Second); took < 500*time.Millisecond {
			t.Fatalf("closed after %v, before the read timeout", took)
		}
	})

	t.Run("stalled headers", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err = io.WriteString(conn, "GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n"); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, conn, 5*time.Second)
	})

	t.Run("idle keep-alive", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err = io.WriteString(conn, "GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, conn, 6*time.Second)
	})

	t.Run("slow upload extends its deadline", func(t *testing.T) {
		cli := newUser(t, rh, "uploader")
		pr, pw := io.Pipe()
		go func() {
			for i := 0; i < 5; i++ {
				_, _ = pw.Write([]byte("chunk-of-a-slow-upload "))
				time.Sleep(500 * time.Millisecond)
			}
			_ = pw.Close()
		}()
		start := time.Now()
		resp, err := cli.UploadMedia(t.Context(), mautrix.ReqUploadMedia{Content: pr, ContentLength: -1, ContentType: "text/plain"})
		if err != nil {
			t.Fatalf("upload taking %v with a 1 s read timeout: %v", time.Since(start), err)
		}
		if resp.ContentURI.IsEmpty() || time.Since(start) < 2*time.Second {
			t.Fatalf("upload answered %v after %v", resp.ContentURI, time.Since(start))
		}
	})

	t.Run("long-poll outlives read timeout", func(t *testing.T) {
		cli := newUser(t, rh, "poller")
		first, err := cli.SyncRequest(t.Context(), 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := cli.SyncRequest(t.Context(), 2500, first.NextBatch, "", false, ""); err != nil {
			t.Fatalf("long-poll of 2.5 s with a 1 s read timeout: %v", err)
		}
		if took := time.Since(start); took < 2*time.Second {
			t.Fatalf("long-poll returned after %v; expected it to wait", took)
		}
	})
}
