package appservice

import (
	"net/http"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/passerelle/passerelle/configs"
	"github.com/passerelle/passerelle/registration"
)

// BenchmarkSenderThroughput measures events delivered per second from the stream to an in-process
// appservice that acknowledges at once (SQLite, fake event source): the sender's own overhead per event.
func BenchmarkSenderThroughput(b *testing.B) {
	src := newFakeSource()
	as := newFakeAS(b, "", 0)
	reg := testReg(b, InternalBaseURL)
	as.hsToken = reg.ServerToken
	tr := NewInProcessTransport(http.Handler(as))
	db := openDB(b, configs.Database{Type: "sqlite"}, b.TempDir())
	s, err := NewSender(b.Context(), db, src, []*registration.Registration{reg}, tr.Client(), configs.Appservices{}, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	defer s.Stop()
	b.ResetTimer()
	for range b.N {
		src.msg("!r:hs", "@bridge_a:hs", "m")
	}
	deadline := time.Now().Add(5 * time.Minute)
	for s.Status()[0].StreamPos < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatal("sender did not catch up")
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
