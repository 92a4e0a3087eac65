// Package deployment checks the deployment files at the repository root (docker-compose.yml,
// Dockerfile, .env.example). Docker is not available on the build machines, so the compose file
// is loaded with the compose-spec loader and its wiring asserted in Go tests.
package deployment
