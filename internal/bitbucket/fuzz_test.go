package bitbucket

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"
)

// Fuzz targets run as ordinary tests with their seeds (every recorded payload); run
// `go test -fuzz=FuzzDecodeEvent ./internal/bitbucket` to explore further.

func FuzzDecodeEvent(f *testing.F) {
	for rel, key := range webhookFixtureKeys {
		f.Add(key, readFixture(f, rel))
	}
	f.Add("repo:push", []byte(`{"push":{"changes":[{"old":null,"new":null}]},"repository":{"uuid":"{x}"}}`))
	f.Add("pullrequest:comment_created", []byte(`{"repository":{"uuid":"{x}"},"pullrequest":{"id":1},"comment":{"id":"1"}}`))
	f.Add("repo:updated", []byte(`{"repository":{"uuid":"{x}"},"changes":{"name":{"old":1,"new":[]}}}`))
	f.Fuzz(func(t *testing.T, key string, body []byte) {
		ev, err := DecodeEvent(key, body)
		if err != nil {
			if ev != nil {
				t.Fatalf("DecodeEvent returned both an event and an error: %v", err)
			}
			if !errors.Is(err, ErrMalformedEvent) && !errors.Is(err, ErrUnknownEvent) {
				t.Fatalf("error %v is neither ErrMalformedEvent nor ErrUnknownEvent", err)
			}
			return
		}
		if ev.EventKey() != key {
			t.Fatalf("EventKey = %q, want %q", ev.EventKey(), key)
		}
		if ev.EventRepository().UUID == "" {
			t.Fatal("decoded event without repository uuid")
		}
		if push, ok := ev.(*PushEvent); ok {
			for _, change := range push.Push.Changes {
				for _, ref := range []*PushRef{change.Old, change.New} {
					if ref != nil && (ref.Name == "" || ref.Target.Hash == "") {
						t.Fatal("decoded push change with an incomplete ref")
					}
				}
			}
		}
	})
}

func FuzzVerifySignature(f *testing.F) {
	body := readFixture(f, "webhooks/signed/repo_push_signed.json")
	f.Add([]byte(signedFixtureSecret), body, signedFixtureHeader)
	f.Add([]byte(signedFixtureSecret), body, signedFixtureWrong)
	f.Add([]byte("s"), []byte("{}"), "sha256=")
	f.Add([]byte{}, []byte{}, "")
	f.Fuzz(func(t *testing.T, secret, body []byte, header string) {
		err := VerifySignature(secret, body, header)
		if err != nil && !errors.Is(err, ErrInvalidSignature) {
			t.Fatalf("unexpected error kind: %v", err)
		}
		if len(secret) > 0 {
			if err := VerifySignature(secret, body, Sign(secret, body)); err != nil {
				t.Fatalf("own signature rejected: %v", err)
			}
		}
	})
}

func FuzzAPIErrorBody(f *testing.F) {
	f.Add(http.StatusNotFound, readFixture(f, "rest/error_repository_not_found.json"))
	f.Add(http.StatusTooManyRequests, []byte("Rate limit for this resource has been exceeded"))
	f.Add(http.StatusForbidden, []byte(`{"type":"error","error":{"message":"m","detail":{"required":["webhook"]}}}`))
	f.Add(http.StatusGone, []byte(`{"type":"error","error":{"message":"CHANGE-2770","detail":null}}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		apiErr := newAPIError(http.MethodGet, "/2.0/x", status, body)
		if apiErr.Status != status {
			t.Fatalf("status = %d, want %d", apiErr.Status, status)
		}
		_ = apiErr.Error()
		if len(apiErr.Message) > 1000 || len(apiErr.Detail) > 1000 {
			t.Fatalf("unbounded message/detail: %d/%d bytes", len(apiErr.Message), len(apiErr.Detail))
		}
	})
}

func FuzzDecodePage(f *testing.F) {
	for _, rel := range []string{"rest/repositories_page.json", "rest/pullrequests_page_5_open.json", "rest/openapi-examples/pullrequest_activity_comment.json", "rest/hooks_page_pagelen100.json"} {
		f.Add(readFixture(f, rel))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		// The export types keep Raw; decoding arbitrary input must fail cleanly or round-trip.
		var repos pageEnvelope[Repository]
		if json.Unmarshal(body, &repos) == nil {
			for _, r := range repos.Values {
				if r.Raw != nil && !json.Valid(r.Raw) {
					t.Fatal("Raw is not valid JSON")
				}
			}
		}
		var prs pageEnvelope[PullRequest]
		_ = json.Unmarshal(body, &prs)
		var activity pageEnvelope[Activity]
		_ = json.Unmarshal(body, &activity)
		var hooks pageEnvelope[Hook]
		_ = json.Unmarshal(body, &hooks)
	})
}
