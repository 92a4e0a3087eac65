// Package s3server runs versitygw (an S3 gateway over a local directory) as a child process: the
// real S3 endpoint behind `gitsec dev` and the tests of gocloud.dev s3:// storage.
package s3server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"golang.org/x/sys/unix"

	"github.com/gitsec/gitsec/internal/childprocess"
)

// Region is the region the gateway reports and clients sign for.
const Region = "us-east-1"

// Options configure the gateway. Binary, Dir, AccessKey and SecretKey are required.
type Options struct {
	// Binary is the path of the versitygw executable.
	Binary string
	// Dir holds the buckets: each subdirectory is a bucket, files below it are objects.
	Dir string
	// Port is the TCP port on 127.0.0.1; 0 picks a free one.
	Port int
	// AccessKey and SecretKey are the root credentials clients sign with.
	AccessKey, SecretKey string
	// LogFile receives the gateway's output; empty means a temporary file removed by Stop.
	LogFile string
	Logger  *slog.Logger
}

// Server is a running gateway owned by this process.
type Server struct {
	port       int
	accessKey  string
	secretKey  string
	logFile    string
	ownLogFile bool
	logger     *slog.Logger
	proc       *childprocess.Process
}

// stopGrace is how long the gateway gets to shut down on SIGTERM before it is killed.
const stopGrace = 5 * time.Second

// Start runs the gateway and returns once it answers authenticated S3 requests.
func Start(ctx context.Context, opts Options) (*Server, error) {
	switch {
	case opts.Binary == "":
		return nil, errors.New("start s3 server: no binary given")
	case opts.Dir == "":
		return nil, errors.New("start s3 server: no directory given")
	case opts.AccessKey == "" || opts.SecretKey == "":
		return nil, errors.New("start s3 server: access key and secret key are required")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("start s3 server: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("start s3 server: create %s: %w", dir, err)
	}
	s := &Server{accessKey: opts.AccessKey, secretKey: opts.SecretKey, logFile: opts.LogFile, logger: logger}
	if s.logFile == "" {
		f, err := os.CreateTemp("", "versitygw-*.log")
		if err != nil {
			return nil, fmt.Errorf("start s3 server: create log file: %w", err)
		}
		f.Close()
		s.logFile, s.ownLogFile = f.Name(), true
	}
	// A picked free port can be taken before the gateway binds it: worth another try.
	for attempt := 1; ; attempt++ {
		err = s.run(ctx, opts, dir)
		if err == nil || opts.Port != 0 || attempt == 3 || ctx.Err() != nil ||
			!strings.Contains(childprocess.LogTail(s.logFile), "address already in use") {
			break
		}
		logger.Warn("s3 server could not bind its port, retrying", "err", err)
	}
	if err != nil {
		err = fmt.Errorf("start s3 server on %s: %w\n%s", dir, err, childprocess.LogTail(s.logFile))
		s.removeOwnLogFile()
		return nil, err
	}
	logger.Info("s3 server started", "endpoint", s.Endpoint(), "dir", dir)
	return s, nil
}

func (s *Server) run(ctx context.Context, opts Options, dir string) error {
	s.port = opts.Port
	if s.port == 0 {
		var err error
		if s.port, err = childprocess.FreePort(); err != nil {
			return err
		}
	}
	args := []string{"--port", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)), "--quiet", "posix"}
	if !supportsUserXattrs(dir) {
		// The posix backend keeps object metadata in xattrs; without them (tmpfs, some overlay
		// filesystems) a sidecar directory next to the buckets holds it.
		sidecar := dir + ".meta"
		if err := os.MkdirAll(sidecar, 0o755); err != nil {
			return fmt.Errorf("create metadata sidecar %s: %w", sidecar, err)
		}
		s.logger.Info("filesystem lacks user xattrs, using a metadata sidecar", "sidecar", sidecar)
		args = append(args, "--sidecar", sidecar)
	}
	args = append(args, dir)

	cmd := exec.Command(opts.Binary, args...)
	// Credentials go through the environment so that they never show in the process list.
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s.accessKey, "ROOT_SECRET_KEY="+s.secretKey)
	var err error
	s.proc, err = childprocess.Start(cmd, childprocess.Options{LogFile: s.logFile, StopSignal: syscall.SIGTERM})
	if err != nil {
		return fmt.Errorf("run %s: %w", opts.Binary, err)
	}
	client := s.Client()
	listBuckets := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := client.ListBuckets(ctx, &s3.ListBucketsInput{})
		return err
	}
	if err := s.proc.WaitReady(ctx, 100*time.Millisecond, listBuckets); err != nil {
		s.stopProcess()
		return fmt.Errorf("wait for s3 server on %s: %w", s.Endpoint(), err)
	}
	return nil
}

// Endpoint returns the gateway's base URL.
func (s *Server) Endpoint() string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// Client returns an S3 client signed with the root credentials, addressing buckets by path.
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       Region,
		BaseEndpoint: aws.String(s.Endpoint()),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.accessKey, s.secretKey, ""),
	})
}

// CreateBucket creates an empty bucket; one that already exists and is ours is fine.
func (s *Server) CreateBucket(ctx context.Context, name string) error {
	_, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)})
	var owned *types.BucketAlreadyOwnedByYou
	if err != nil && !errors.As(err, &owned) {
		return fmt.Errorf("create bucket %s: %w", name, err)
	}
	return nil
}

// BucketURL returns the gocloud.dev/blob URL of a bucket on this server. gocloud's s3blob takes
// credentials from the AWS default chain, so the opener needs AWSEnv in its environment (or
// another source of these credentials).
func (s *Server) BucketURL(name string) string {
	return "s3://" + name + "?endpoint=" + s.Endpoint() + "&use_path_style=true&region=" + Region
}

// AWSEnv returns the environment entries that make AWS SDK clients (gocloud's s3blob included)
// sign requests with this server's root credentials.
func (s *Server) AWSEnv() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + s.accessKey, "AWS_SECRET_ACCESS_KEY=" + s.secretKey}
}

// Stop terminates the gateway (SIGTERM, then SIGKILL after a grace period) and waits for it.
func (s *Server) Stop() error {
	if s == nil || s.proc == nil {
		return nil
	}
	err := s.stopProcess()
	s.removeOwnLogFile()
	if err != nil {
		return fmt.Errorf("stop s3 server: %w", err)
	}
	s.logger.Info("s3 server stopped", "endpoint", s.Endpoint())
	return nil
}

func (s *Server) stopProcess() error {
	killed, err := s.proc.StopWithin(stopGrace)
	if killed {
		s.logger.Warn("s3 server ignored SIGTERM and was killed", "grace", stopGrace)
	}
	return err
}

func (s *Server) removeOwnLogFile() {
	if s.ownLogFile {
		os.Remove(s.logFile)
	}
}

// supportsUserXattrs probes dir's filesystem the way the posix backend will use it.
func supportsUserXattrs(dir string) bool {
	f, err := os.CreateTemp(dir, ".xattr-probe-")
	if err != nil {
		return false
	}
	name := f.Name()
	f.Close()
	defer os.Remove(name)
	return unix.Setxattr(name, "user.gitsec.probe", []byte("1"), 0) == nil
}
