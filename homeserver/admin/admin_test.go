package admin

import (
	"testing"
	"time"
)

// TestMACMatchesSynapse checks MAC against values computed independently (Python's hmac module, the way Synapse's
// register_new_matrix_user computes them).
func TestMACMatchesSynapse(t *testing.T) {
	cases := []struct {
		name, nonce, user, pass, userType, want string
		admin                                   bool
	}{
		{"admin", "abc", "alice", "pw", "", "dc5ed98b283077684552e3f72d67f26b3366bf58", true},
		{"notadmin with user_type", "abc", "bob", "pw", "bot", "e825b511dceef6cf1faf4dcb2a6bc6e64ba37780", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := MAC("secret", c.nonce, c.user, c.pass, c.admin, c.userType); got != c.want {
				t.Fatalf("MAC = %s, want %s", got, c.want)
			}
		})
	}
}

func TestNoncesExpireAndAreSingleUse(t *testing.T) {
	a := New(nil, "localhost", "s")
	now := time.Unix(1000, 0)
	a.now = func() time.Time { return now }
	a.nonces["n1"] = now.Add(nonceTTL)
	a.nonces["n2"] = now.Add(nonceTTL)
	if !a.takeNonce("n1") {
		t.Fatal("fresh nonce refused")
	}
	if a.takeNonce("n1") {
		t.Fatal("nonce accepted twice")
	}
	now = now.Add(nonceTTL + time.Second)
	if a.takeNonce("n2") {
		t.Fatal("expired nonce accepted")
	}
	if a.takeNonce("never-issued") {
		t.Fatal("unknown nonce accepted")
	}
}
