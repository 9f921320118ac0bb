package homeserver_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
)

// TestShutdownEndsLongPolls: http.Server.Shutdown with BeginShutdown registered returns promptly even while a
// client waits in a 60 s long-poll, and the client gets a normal answer.
func TestShutdownEndsLongPolls(t *testing.T) {
	e := newEnv(t, "sqlite", nil, nil)
	alice := e.user("alice")
	first, err := alice.SyncRequest(ctx(t), 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: e.hs.Handler()}
	srv.RegisterOnShutdown(e.hs.BeginShutdown)
	go func() { _ = srv.Serve(ln) }()
	cli, _ := mautrix.NewClient("http://"+ln.Addr().String(), alice.UserID, alice.AccessToken)
	done := make(chan error, 1)
	go func() {
		_, err := cli.SyncRequest(context.Background(), 60000, first.NextBatch, "", false, "")
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("shutdown took %v", took)
	}
	if err := <-done; err != nil {
		t.Fatalf("long-poll ended with an error: %v", err)
	}
}
