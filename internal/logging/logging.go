// Package logging builds the process-wide slog logger from the configuration.
package logging

import (
	"io"
	"log/slog"
)

// New returns a logger writing text or JSON records at the given level.
func New(w io.Writer, level slog.Level, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
