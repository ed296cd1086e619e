// Command vcsim serves govmomi's vSphere API simulator (vCenter model) for
// Keel's vSphere driver tests. Debian's golang-github-vmware-govmomi-dev
// ships the simulator package but not upstream's vcsim command, so this is
// a small command of our own over that package; `scripts/vcsim-up` builds it
// offline with Debian's Go and caches the binary.
//
// Differences from upstream's vcsim: it serves only TLS with the
// certificate and key it is given (so clients verify it against a CA), it
// checks one user name and password (the password read from a file, never
// from the command line), and it prints one line `VCSIM_URL=<sdk url>` on
// standard output once it listens. With -exit-on-eof it stops when its
// standard input closes, so a test that dies leaves no simulator behind.
package main

import (
	"bufio"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	listen := flag.String("l", "127.0.0.1:0", "loopback address:port to listen on")
	certFile := flag.String("tlscert", "", "PEM certificate chain served (required)")
	keyFile := flag.String("tlskey", "", "PEM private key of -tlscert (required)")
	user := flag.String("username", "keel", "the one user name accepted")
	passFile := flag.String("password-file", "", "file holding the one password accepted (required)")
	dc := flag.Int("dc", 1, "datacenters")
	cluster := flag.Int("cluster", 1, "clusters per datacenter")
	clusterHost := flag.Int("host", 2, "hosts per cluster")
	pool := flag.Int("pool", 1, "child resource pools per cluster")
	machine := flag.Int("vm", 1, "VMs per resource pool (and per standalone host)")
	exitOnEOF := flag.Bool("exit-on-eof", false, "stop when standard input closes")
	trace := flag.Bool("trace", false, "log SOAP requests and responses to standard error")
	flag.Parse()

	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		log.Fatalf("-l %q: %v", *listen, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		log.Fatalf("-l %q: only a loopback address is served", *listen)
	}
	if *certFile == "" || *keyFile == "" || *passFile == "" {
		log.Fatal("-tlscert, -tlskey and -password-file are required")
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatalf("loading -tlscert/-tlskey: %v", err)
	}
	pass, err := os.ReadFile(*passFile)
	if err != nil {
		log.Fatalf("reading -password-file: %v", err)
	}
	password := strings.TrimRight(string(pass), "\r\n")
	if password == "" {
		log.Fatal("-password-file is empty")
	}

	model := simulator.VPX()
	model.Datacenter = *dc
	model.Cluster = *cluster
	model.ClusterHost = *clusterHost
	model.Host = 0
	model.Pool = *pool
	model.Machine = *machine
	if err := model.Create(); err != nil {
		log.Fatalf("creating the inventory: %v", err)
	}
	simulator.Trace = *trace

	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, password)}
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	server := model.Service.NewServer()

	u := *server.URL
	u.User = nil
	fmt.Printf("VCSIM_URL=%s\n", u.String())
	os.Stdout.Sync()

	done := make(chan os.Signal, 1)
	signal.Notify(done, syscall.SIGINT, syscall.SIGTERM)
	if *exitOnEOF {
		go func() {
			_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
			done <- syscall.SIGTERM
		}()
	}
	<-done
	server.Close()
	model.Remove()
}
