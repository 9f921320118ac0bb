package configs

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
)

// TestDockerCompose loads docker-compose.yml with the Compose specification's own loader (which validates it
// against the schema) and checks that the hub and PostgreSQL fit together: the config the hub mounts points at
// the postgres service with its credentials, listens on the published port, and keeps data in the volume.
func TestDockerCompose(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root), cli.WithEnv(nil), cli.WithResolvedPaths(true))
	if err != nil {
		t.Fatal(err)
	}
	project, err := opts.LoadProject(t.Context())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	if project.Name != "passerelle" {
		t.Errorf("project name %q", project.Name)
	}
	hub, err := project.GetService("passerelle")
	if err != nil {
		t.Fatal(err)
	}
	pg, err := project.GetService("postgres")
	if err != nil {
		t.Fatal(err)
	}

	// PostgreSQL 15 with a health check the hub waits for.
	if !strings.HasPrefix(pg.Image, "postgres:15") {
		t.Errorf("postgres image %q, want postgres:15", pg.Image)
	}
	if pg.HealthCheck == nil || len(pg.HealthCheck.Test) == 0 {
		t.Error("postgres has no health check")
	}
	if dep, ok := hub.DependsOn["postgres"]; !ok || dep.Condition != "service_healthy" {
		t.Errorf("passerelle depends_on postgres = %+v, want condition service_healthy", hub.DependsOn)
	}
	if len(pg.Ports) != 0 {
		t.Errorf("postgres publishes ports %v: it must stay on the compose network", pg.Ports)
	}

	// The hub is built from the Dockerfile with cgo and the goolm tag.
	if hub.Build == nil {
		t.Fatal("passerelle has no build section")
	}
	dockerfile := filepath.Join(hub.Build.Context, hub.Build.Dockerfile)
	df, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	for _, want := range []string{"FROM golang:1.26", "CGO_ENABLED=1", "-tags goolm", "FROM debian:", "./cmd/passerelle"} {
		if !strings.Contains(string(df), want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}

	// The config the hub mounts is valid and consistent with the compose file.
	var cfgPath, dataTarget string
	for _, v := range hub.Volumes {
		switch {
		case v.Type == "bind" && v.Target == "/config/passerelle.yaml":
			cfgPath = v.Source
			if !v.ReadOnly {
				t.Error("config mount should be read-only")
			}
		case v.Type == "volume":
			dataTarget = v.Target
		}
	}
	if cfgPath == "" {
		t.Fatal("passerelle does not mount /config/passerelle.yaml")
	}
	if !slices.Equal([]string(hub.Command), []string{"serve", "-c", "/config/passerelle.yaml"}) {
		t.Errorf("command %v does not serve the mounted config", hub.Command)
	}
	cfg, err := Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("%s: %v", cfgPath, err)
	}
	if cfg.Server.DataDir != dataTarget {
		t.Errorf("data_dir %q is not the data volume %q", cfg.Server.DataDir, dataTarget)
	}
	if cfg.Database.Type != "postgres" {
		t.Fatalf("database type %q, want postgres", cfg.Database.Type)
	}
	u, err := url.Parse(cfg.Database.URI)
	if err != nil {
		t.Fatal(err)
	}
	pass, _ := u.User.Password()
	env := func(k string) string {
		if v := pg.Environment[k]; v != nil {
			return *v
		}
		return ""
	}
	if u.Hostname() != "postgres" || u.User.Username() != env("POSTGRES_USER") || pass != env("POSTGRES_PASSWORD") ||
		strings.TrimPrefix(u.Path, "/") != env("POSTGRES_DB") {
		t.Errorf("database.uri %q does not match the postgres service's user/password/database", cfg.Database.URI)
	}
	_, listenPort, _ := net.SplitHostPort(cfg.Server.Listen)
	published := false
	for _, p := range hub.Ports {
		if listenPort == "" || p.Target != parsePortNumber(listenPort) {
			continue
		}
		published = true
		if p.HostIP != "127.0.0.1" {
			t.Errorf("port %d published on %q: plain HTTP must stay on the host's loopback", p.Target, p.HostIP)
		}
	}
	if !published {
		t.Errorf("the hub listens on %s but that port is not published", cfg.Server.Listen)
	}
	if project.Volumes["passerelle-data"].Name == "" || project.Volumes["postgres-data"].Name == "" {
		t.Errorf("named volumes missing: %v", project.Volumes)
	}
}

func parsePortNumber(s string) uint32 {
	var n uint32
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + uint32(c-'0')
	}
	return n
}
