package email

import (
	"io"
	"net"
	"sync"
	"testing"
)

// stallProxy forwards TCP to a backend and can freeze every current connection: the sockets stay open but no
// byte moves in either direction, like a NAT box that silently dropped the flow. New connections work normally.
type stallProxy struct {
	ln      net.Listener
	backend string

	mu    sync.Mutex
	conns []*proxied
	count int
}

type proxied struct {
	mu      sync.Mutex
	stalled bool
	cond    *sync.Cond
	a, b    net.Conn
}

func newStallProxy(t *testing.T, backend string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, backend: backend}
	go p.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c.close()
		}
	})
	return p
}

func (p *stallProxy) Addr() string { return p.ln.Addr().String() }

// Connections is how many client connections the proxy has accepted.
func (p *stallProxy) Connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count
}

func (p *stallProxy) serve() {
	for {
		a, err := p.ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", p.backend)
		if err != nil {
			_ = a.Close()
			continue
		}
		pc := &proxied{a: a, b: b}
		pc.cond = sync.NewCond(&pc.mu)
		p.mu.Lock()
		p.conns = append(p.conns, pc)
		p.count++
		p.mu.Unlock()
		go pc.pipe(a, b)
		go pc.pipe(b, a)
	}
}

func (pc *proxied) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		pc.mu.Lock()
		for pc.stalled {
			pc.cond.Wait()
		}
		pc.mu.Unlock()
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				pc.close()
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				pc.close()
			}
			_ = dst.Close()
			return
		}
	}
}

func (pc *proxied) close() {
	pc.mu.Lock()
	pc.stalled = false
	pc.cond.Broadcast()
	pc.mu.Unlock()
	_ = pc.a.Close()
	_ = pc.b.Close()
}

// StallAll freezes every connection accepted so far.
func (p *stallProxy) StallAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.mu.Lock()
		c.stalled = true
		c.mu.Unlock()
	}
}

// CloseAll drops every connection accepted so far.
func (p *stallProxy) CloseAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.close()
	}
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for _, r := range port {
		n = n*10 + int(r-'0')
	}
	return n
}
