package auth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/edgechat/edgechat/cluster/fsm/fsmtest"
	"github.com/edgechat/edgechat/internal/httpapi"
	"github.com/edgechat/edgechat/internal/ratelimit"
	"github.com/edgechat/edgechat/internal/testutil"
	"github.com/edgechat/edgechat/internal/wire"
)

func TestRegisterLoginRefreshRotationAndReuse(t *testing.T) {
	e := newEnv(t)
	r := e.post("/auth/register", map[string]string{"username": "Alice", "password": "correct horse", "displayName": "Alice A."})
	if r.Code != http.StatusCreated || !strings.Contains(string(r.Body), `"userId":"alice"`) {
		t.Fatalf("register: %d %s", r.Code, r.Body)
	}
	if name, ok := e.profiles.get("alice"); !ok || name != "Alice A." {
		t.Fatalf("profile not created: %q %v", name, ok)
	}

	tk := e.login("ALICE", "correct horse")
	if tk.UserID != "alice" || tk.ExpiresIn != 900 || tk.RefreshToken == "" {
		t.Fatalf("tokens: %+v", tk)
	}
	p, err := e.svc.VerifyAccessToken(tk.AccessToken)
	if err != nil || p.UserID != "alice" {
		t.Fatalf("verify: %+v %v", p, err)
	}

	// Rotation: the current token gives a new pair.
	r = e.post("/auth/refresh", map[string]string{"refreshToken": tk.RefreshToken})
	if r.Code != http.StatusOK {
		t.Fatalf("refresh: %d %s", r.Code, r.Body)
	}
	var tk2 Tokens
	if err := json.Unmarshal(r.Body, &tk2); err != nil {
		t.Fatal(err)
	}
	if tk2.RefreshToken == tk.RefreshToken || tk2.UserID != "alice" {
		t.Fatalf("not rotated: %+v", tk2)
	}
	if _, err := e.svc.VerifyAccessToken(tk2.AccessToken); err != nil {
		t.Fatal(err)
	}
	if fam1, _, _ := strings.Cut(tk.RefreshToken, "."); !strings.HasPrefix(tk2.RefreshToken, fam1+".") {
		t.Fatal("rotation changed the family")
	}

	// Reusing the old token revokes the family...
	r = e.post("/auth/refresh", map[string]string{"refreshToken": tk.RefreshToken})
	if r.Code != http.StatusUnauthorized || r.errCode() != CodeRefreshReused {
		t.Fatalf("reuse: %d %s", r.Code, r.Body)
	}
	// ...so the current token is dead too.
	r = e.post("/auth/refresh", map[string]string{"refreshToken": tk2.RefreshToken})
	if r.Code != http.StatusUnauthorized || r.errCode() != CodeRefreshInvalid {
		t.Fatalf("after revoke: %d %s", r.Code, r.Body)
	}
	// Another login starts an independent family.
	tk3 := e.login("alice", "correct horse")
	if _, err := e.svc.Refresh(context.Background(), tk3.RefreshToken); err != nil {
		t.Fatal(err)
	}
	if got := testutil.CounterValue(t, e.svc.refreshes.WithLabelValues("reused")); got != 1 {
		t.Fatalf("reused metric = %v", got)
	}
	if got := testutil.CounterValue(t, e.svc.logins.WithLabelValues("success")); got != 2 {
		t.Fatalf("login success metric = %v", got)
	}
}

func TestRefreshRefusals(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	tk := e.login("alice", "password1")
	for _, bad := range []string{"", "x", "a.b", tk.RefreshToken + "x", strings.Repeat("A", 22) + "." + strings.Repeat("A", 43)} {
		r := e.post("/auth/refresh", map[string]string{"refreshToken": bad})
		if r.Code != http.StatusUnauthorized || r.errCode() != CodeRefreshInvalid {
			t.Errorf("refresh %q: %d %s", bad, r.Code, r.Body)
		}
	}
	// Expired.
	e.clock.Advance(DefaultRefreshTTL + 1)
	r := e.post("/auth/refresh", map[string]string{"refreshToken": tk.RefreshToken})
	if r.Code != http.StatusUnauthorized || r.errCode() != CodeRefreshInvalid {
		t.Fatalf("expired: %d %s", r.Code, r.Body)
	}
}

func TestLogoutRevokesFamily(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	tk := e.login("alice", "password1")
	if r := e.post("/auth/logout", map[string]string{"refreshToken": tk.RefreshToken}); r.Code != http.StatusNoContent {
		t.Fatalf("logout: %d %s", r.Code, r.Body)
	}
	if _, err := e.svc.Refresh(context.Background(), tk.RefreshToken); !errors.Is(err, ErrRefreshInvalid) {
		t.Fatalf("refresh after logout: %v", err)
	}
}

// A logout may name its device; a malformed device name is refused
// before anything is revoked.
func TestLogoutWithDevice(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	tk := e.login("alice", "password1")
	r := e.post("/auth/logout", map[string]string{"refreshToken": tk.RefreshToken, "device": "a/b"})
	if r.Code != http.StatusBadRequest || r.errCode() != httpapi.CodeValidation {
		t.Fatalf("bad device: %d %s", r.Code, r.Body)
	}
	if r := e.post("/auth/logout", map[string]string{"refreshToken": tk.RefreshToken, "device": "phone"}); r.Code != http.StatusNoContent {
		t.Fatalf("logout: %d %s", r.Code, r.Body)
	}
}

func TestFirstUserIsAdmin(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	e.register("bob", "password2")
	pa, err := e.svc.VerifyAccessToken(e.login("alice", "password1").AccessToken)
	if err != nil || !pa.Admin {
		t.Fatalf("alice: %+v %v", pa, err)
	}
	pb, err := e.svc.VerifyAccessToken(e.login("bob", "password2").AccessToken)
	if err != nil || pb.Admin {
		t.Fatalf("bob: %+v %v", pb, err)
	}
	// Roles change through the log and show in the next tokens.
	if err := e.svc.SetAdmin(context.Background(), "bob", true); err != nil {
		t.Fatal(err)
	}
	pb, _ = e.svc.VerifyAccessToken(e.login("bob", "password2").AccessToken)
	if !pb.Admin {
		t.Fatal("bob not admin after SetAdmin")
	}
	if err := e.svc.SetAdmin(context.Background(), "nobody", true); !errors.Is(err, ErrNoAccount) || !errors.Is(err, wire.ErrNotFound) {
		t.Fatalf("SetAdmin unknown: %v", err)
	}
}

func TestDuplicateUsername(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	for _, name := range []string{"alice", "ALICE", "Alice"} {
		r := e.post("/auth/register", map[string]string{"username": name, "password": "other-password"})
		if r.Code != http.StatusConflict || r.errCode() != CodeUsernameTaken {
			t.Fatalf("%s: %d %s", name, r.Code, r.Body)
		}
	}
	// The original account is unchanged.
	e.login("alice", "password1")
	if r := e.post("/auth/login", map[string]string{"username": "alice", "password": "other-password"}); r.Code != http.StatusUnauthorized {
		t.Fatalf("other password accepted: %d", r.Code)
	}
	if got := testutil.CounterValue(t, e.svc.registrations.WithLabelValues("taken")); got != 3 {
		t.Fatalf("taken metric = %v", got)
	}
}

func TestConcurrentRegistrationOneWins(t *testing.T) {
	e := newEnv(t)
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.svc.CreateAccount(context.Background(), "carol", "password1", "")
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrUsernameTaken):
			t.Fatalf("unexpected error: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d registrations succeeded, want 1", ok)
	}
	if name, _ := e.profiles.get("carol"); name != "carol" {
		t.Fatalf("default display name = %q", name)
	}
}

func TestRegisterValidation(t *testing.T) {
	e := newEnv(t)
	long := strings.Repeat("a", 33)
	cases := []struct {
		name, body string
		status     int
		code       string
	}{
		{"short username", `{"username":"ab","password":"password1"}`, 400, CodeInvalidUsername},
		{"long username", `{"username":"` + long + `","password":"password1"}`, 400, CodeInvalidUsername},
		{"digit first", `{"username":"1abc","password":"password1"}`, 400, CodeInvalidUsername},
		{"space", `{"username":"al ice","password":"password1"}`, 400, CodeInvalidUsername},
		{"slash", `{"username":"al/ice","password":"password1"}`, 400, CodeInvalidUsername},
		{"non-ascii", `{"username":"\u212aelvin","password":"password1"}`, 400, CodeInvalidUsername},
		{"empty username", `{"password":"password1"}`, 400, CodeInvalidUsername},
		{"short password", `{"username":"dave","password":"1234567"}`, 400, CodeInvalidPassword},
		{"long password", `{"username":"dave","password":"` + strings.Repeat("p", 129) + `"}`, 400, CodeInvalidPassword},
		{"long display name", `{"username":"dave","password":"password1","displayName":"` + strings.Repeat("d", 65) + `"}`, 400, CodeInvalidDisplayName},
		{"control in display name", `{"username":"dave","password":"password1","displayName":"a\u0007b"}`, 400, CodeInvalidDisplayName},
		{"blank display name", `{"username":"dave","password":"password1","displayName":"   "}`, 400, CodeInvalidDisplayName},
		{"unknown field", `{"username":"dave","password":"password1","admin":true}`, 400, "unknown_field"},
		{"wrong type", `{"username":"dave","password":12345678}`, 400, "validation_failed"},
		{"not an object", `["dave"]`, 400, "validation_failed"},
		{"malformed", `{"username":"dave",`, 400, "invalid_json"},
		{"trailing data", `{"username":"dave","password":"password1"} {}`, 400, "invalid_json"},
		{"oversized", `{"username":"dave","password":"` + strings.Repeat("p", 5000) + `"}`, 413, "payload_too_large"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(http.MethodPost, "/auth/register", c.body, "192.0.2.1")
			if r.Code != c.status || r.errCode() != c.code {
				t.Fatalf("got %d %s, want %d %s", r.Code, r.Body, c.status, c.code)
			}
		})
	}
	// Nothing was created.
	for _, uid := range []string{"dave", "abc", "kelvin"} {
		if ok, err := e.svc.UserExists(uid); err != nil || ok {
			t.Fatalf("UserExists(%s) = %v %v", uid, ok, err)
		}
	}
	if len(e.profiles.names) != 0 {
		t.Fatalf("profiles created: %v", e.profiles.names)
	}
	// A display name at the limit, with surrounding spaces, is fine.
	r := e.post("/auth/register", map[string]string{"username": "dave", "password": "password1", "displayName": "  " + strings.Repeat("é", 64) + " "})
	if r.Code != http.StatusCreated {
		t.Fatalf("64-char display name: %d %s", r.Code, r.Body)
	}
	if n, _ := e.profiles.get("dave"); n != strings.Repeat("é", 64) {
		t.Fatalf("display name not trimmed: %q", n)
	}
}

func TestWrongContentType(t *testing.T) {
	e := newEnv(t)
	req := `{"username":"dave","password":"password1"}`
	r := e.do(http.MethodPost, "/auth/login", req, "192.0.2.1")
	if r.Code != http.StatusUnauthorized {
		t.Fatalf("unknown user login: %d", r.Code)
	}
	// The request helper sets JSON; check a text body is refused.
	hr := httpRequest(http.MethodPost, "/auth/register", req, "text/plain")
	rec := serve(e, hr)
	if rec.Code != http.StatusUnsupportedMediaType {
		t.Fatalf("text/plain: %d %s", rec.Code, rec.Body)
	}
}

func TestLoginWrongCredentials(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	for _, body := range []map[string]string{
		{"username": "alice", "password": "password2"},
		{"username": "nobody", "password": "password1"},
		{"username": "!!", "password": "password1"},
		{"username": "alice", "password": ""},
		{"username": "alice", "password": strings.Repeat("p", 200)},
	} {
		r := e.post("/auth/login", body)
		if r.Code != http.StatusUnauthorized || r.errCode() != CodeInvalidCredentials {
			t.Fatalf("%v: %d %s", body, r.Code, r.Body)
		}
		// RFC 9110 §15.5.2: a 401 carries a challenge.
		if got := r.Header.Get("WWW-Authenticate"); got != `Bearer realm="edgechat"` {
			t.Fatalf("%v: WWW-Authenticate %q", body, got)
		}
	}
	// Every failure, even for a name that cannot exist, spent one hash.
	if got := e.svc.hasher.verifies.Load(); got != 5 {
		t.Fatalf("hashes spent = %d, want 5", got)
	}
	// A look-alike of a real name does not reach its account.
	e.register("kelvin", "password1")
	if r := e.post("/auth/login", map[string]string{"username": "\u212aelvin", "password": "password1"}); r.Code != 401 {
		t.Fatalf("kelvin sign: %d", r.Code)
	}
	if got := testutil.CounterValue(t, e.svc.logins.WithLabelValues("invalid_credentials")); got != 6 {
		t.Fatalf("metric = %v", got)
	}
	r := e.do(http.MethodPost, "/auth/login", `{"username":"alice","password":"password1","otp":1}`, "192.0.2.1")
	if r.Code != 400 || r.errCode() != "unknown_field" {
		t.Fatalf("unknown field: %d %s", r.Code, r.Body)
	}
}

func TestLoginRateLimitPerUser(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.LoginPerUser = ratelimit.Spec{Rate: 0.1, Burst: 2} // one token per 10 s
		c.LoginPerIP = ratelimit.Spec{Rate: 10, Burst: 100}
	})
	e.register("alice", "password1")
	for range 2 {
		if r := e.post("/auth/login", map[string]string{"username": "alice", "password": "nope-nope"}); r.Code != 401 {
			t.Fatalf("failure: %d", r.Code)
		}
	}
	// Even the right password is refused while the bucket is empty, and
	// no hash is spent on it.
	r := e.post("/auth/login", map[string]string{"username": "Alice", "password": "password1"})
	if r.Code != http.StatusTooManyRequests || r.errCode() != "rate_limited" {
		t.Fatalf("limited: %d %s", r.Code, r.Body)
	}
	if ra := r.Header.Get("Retry-After"); ra != "10" {
		t.Fatalf("Retry-After = %q", ra)
	}
	// Another user from the same address is not affected.
	e.register("bob", "password2")
	e.login("bob", "password2")

	e.clock.Advance(9 * 1e9)
	if r := e.post("/auth/login", map[string]string{"username": "alice", "password": "password1"}); r.Code != 429 || r.Header.Get("Retry-After") != "1" {
		t.Fatalf("after 9s: %d %q", r.Code, r.Header.Get("Retry-After"))
	}
	e.clock.Advance(1e9)
	e.login("alice", "password1")
	// A success takes no token: the bucket still has the refilled one.
	e.login("alice", "password1")
	if got := testutil.CounterValue(t, e.svc.logins.WithLabelValues("rate_limited")); got != 2 {
		t.Fatalf("rate_limited metric = %v", got)
	}
}

// Failed logins are counted per ratelimit.IPKey, the key of every per-IP
// limit: an IPv6 client's whole /64 shares one bucket.
func TestLoginRateLimitPerIPv6Prefix(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.LoginPerUser = ratelimit.Spec{Rate: 10, Burst: 100}
		c.LoginPerIP = ratelimit.Spec{Rate: 1, Burst: 2}
	})
	e.register("alice", "password1")
	for _, ip := range []string{"[2001:db8:1:2::a]", "[2001:db8:1:2::b]"} {
		if r := e.do(http.MethodPost, "/auth/login", `{"username":"alice","password":"wrong-one"}`, ip); r.Code != 401 {
			t.Fatalf("%s: %d %s", ip, r.Code, r.Body)
		}
	}
	if r := e.do(http.MethodPost, "/auth/login", `{"username":"alice","password":"password1"}`, "[2001:db8:1:2::ffff]"); r.Code != 429 {
		t.Fatalf("same /64: %d %s", r.Code, r.Body)
	}
	if r := e.do(http.MethodPost, "/auth/login", `{"username":"alice","password":"password1"}`, "[2001:db8:1:3::a]"); r.Code != 200 {
		t.Fatalf("another /64: %d %s", r.Code, r.Body)
	}
}

func TestLoginRateLimitPerIP(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.LoginPerUser = ratelimit.Spec{Rate: 10, Burst: 100}
		c.LoginPerIP = ratelimit.Spec{Rate: 1, Burst: 3}
	})
	e.register("alice", "password1")
	for _, u := range []string{"x1x", "x2x", "x3x"} {
		if r := e.do(http.MethodPost, "/auth/login", `{"username":"`+u+`","password":"password1"}`, "198.51.100.7"); r.Code != 401 {
			t.Fatalf("%s: %d", u, r.Code)
		}
	}
	r := e.do(http.MethodPost, "/auth/login", `{"username":"alice","password":"password1"}`, "198.51.100.7")
	if r.Code != 429 || r.Header.Get("Retry-After") != "1" {
		t.Fatalf("limited: %d %q %s", r.Code, r.Header.Get("Retry-After"), r.Body)
	}
	// Another address is fine.
	if r := e.do(http.MethodPost, "/auth/login", `{"username":"alice","password":"password1"}`, "198.51.100.8"); r.Code != 200 {
		t.Fatalf("other ip: %d %s", r.Code, r.Body)
	}
	e.clock.Advance(1e9)
	if r := e.do(http.MethodPost, "/auth/login", `{"username":"alice","password":"password1"}`, "198.51.100.7"); r.Code != 200 {
		t.Fatalf("recovered: %d %s", r.Code, r.Body)
	}
}

func TestUnavailable(t *testing.T) {
	e := newEnv(t)
	e.register("alice", "password1")
	e.prop.SetErr(fsmtest.ErrDown)
	r := e.post("/auth/register", map[string]string{"username": "bob", "password": "password1"})
	if r.Code != http.StatusServiceUnavailable || r.errCode() != "unavailable" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("register: %d %s", r.Code, r.Body)
	}
	r = e.post("/auth/login", map[string]string{"username": "alice", "password": "password1"})
	if r.Code != http.StatusServiceUnavailable {
		t.Fatalf("login: %d %s", r.Code, r.Body)
	}
	e.prop.SetErr(nil)
	if ok, _ := e.svc.UserExists("bob"); ok {
		t.Fatal("bob exists")
	}
}

func TestProfileFailureIsReported(t *testing.T) {
	e := newEnv(t)
	e.profiles.err = wire.ErrUnavailable
	_, err := e.svc.CreateAccount(context.Background(), "alice", "password1", "")
	if !errors.Is(err, wire.ErrUnavailable) {
		t.Fatalf("err = %v", err)
	}
}

func TestPasswordHashing(t *testing.T) {
	h := newHasher(Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32})
	a, b := h.hash("secret-password"), h.hash("secret-password")
	if a == b || !strings.HasPrefix(a, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("hashes: %s %s", a, b)
	}
	if ok, err := h.verify("secret-password", a); !ok || err != nil {
		t.Fatalf("verify: %v %v", ok, err)
	}
	if ok, _ := h.verify("secret-passwore", a); ok {
		t.Fatal("wrong password accepted")
	}
	for _, bad := range []string{"", "$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=64,t=1,p=1$!!$aGFzaGhhc2hoYXNoaGFzaA"} {
		if _, err := h.verify("x", bad); !errors.Is(err, errBadPHC) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestReservedUsernamesRefused(t *testing.T) {
	for _, name := range []string{"search", "Groups", "operator"} {
		if _, err := NormalizeUsername(name); !errors.Is(err, ErrInvalidUsername) {
			t.Errorf("%s: %v, want ErrInvalidUsername", name, err)
		}
	}
}
