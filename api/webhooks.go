package api

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/bitbucket"
	"github.com/gitsec/gitsec/internal/domain"
	"github.com/gitsec/gitsec/internal/store"
	"github.com/gitsec/gitsec/internal/webhooks"
)

// maxWebhookBody is Bitbucket's own bound: it drops payloads over 256 KB without sending them,
// so anything larger did not come from Bitbucket.
const maxWebhookBody = 256 << 10

// unknownHookSecret keys the HMAC computed for deliveries that have no secret to check against
// (unknown installation or hook), so that they take as long as a wrong signature.
var unknownHookSecret = []byte("gitsec: no secret is configured for this hook")

// receiveBitbucketWebhook is POST /webhooks/bitbucket/{installationID}: persist first, answer
// fast, act later. A verified delivery is stored in the outbox before the 2xx, then handed to
// the dispatcher; it never clones nor calls Bitbucket. Only a failure to store answers 5xx
// (Bitbucket retries those, twice).
func (h *handlers) receiveBitbucketWebhook(c *gin.Context) {
	start := time.Now()
	event := c.GetHeader(bitbucket.HeaderEventKey)
	result, err := h.acceptBitbucketWebhook(c, event, start)
	if err != nil {
		h.fail(c, abortError, err)
	}
	h.deps.Metrics.WebhookDelivery(event, result)
	h.deps.Metrics.ObserveWebhookHandler(time.Since(start))
}

func (h *handlers) acceptBitbucketWebhook(c *gin.Context, event string, received time.Time) (string, error) {
	ctx := c.Request.Context()
	instParam := c.Param("installationID")
	hookUUID := c.GetHeader(bitbucket.HeaderHookUUID)
	var rcv store.WebhookReceiver
	known := false
	if instID, err := uuid.Parse(instParam); err == nil {
		rcv, err = h.deps.Store.WebhookReceiverFor(ctx, instID, hookUUID)
		switch {
		case err == nil:
			known = rcv.InstallationStatus != domain.InstallationRemoving && rcv.InstallationStatus != domain.InstallationRemoved
		case !errors.Is(err, store.ErrNotFound):
			return domain.WebhookUnavailable, failed("look up the installation of the webhook", err)
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxWebhookBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		h.rejectWebhook(c, rcv, known, domain.WebhookTooLarge, event)
		return domain.WebhookTooLarge, &apiError{status: http.StatusRequestEntityTooLarge, code: "body_too_large",
			message: "webhook payloads are at most 256 KiB (Bitbucket drops larger ones)"}
	case err != nil:
		return domain.WebhookMalformed, errInvalid("bad_request", "could not read the request body")
	}
	signature := c.GetHeader(bitbucket.HeaderSignature)
	secret, haveSecret := unknownHookSecret, known && rcv.HookSecretEncrypted != nil
	if haveSecret {
		plain, err := h.deps.Box.Decrypt(ctx, rcv.HookSecretEncrypted)
		if err != nil {
			return domain.WebhookUnavailable, failed("decrypt the webhook secret", err)
		}
		secret = plain
	}
	verifyErr := bitbucket.VerifySignature(secret, body, signature)
	if !known {
		// Same work as a bad signature, same answer time: an ID's existence is not for sale.
		return domain.WebhookUnknownInstallation, errNotFound("installation", instParam)
	}
	if verifyErr == nil && !haveSecret {
		verifyErr = errors.New("no hook with this X-Hook-UUID is registered for the installation")
	}
	if verifyErr != nil {
		h.deps.Logger.WarnContext(ctx, "webhook delivery refused: signature not verified",
			"installation", rcv.InstallationID, "tenant_id", rcv.TenantID, "event", event, "hook_uuid", hookUUID,
			"request_uuid", c.GetHeader(bitbucket.HeaderRequestUUID), "reason", verifyErr.Error(), "bytes", len(body))
		h.rejectWebhook(c, rcv, true, domain.WebhookRejectedSignature, event)
		return domain.WebhookRejectedSignature, &apiError{status: http.StatusUnauthorized, code: "invalid_signature",
			message: "the X-Hub-Signature header does not verify against this hook's secret"}
	}
	requestUUID, err := uuid.Parse(strings.Trim(strings.TrimSpace(c.GetHeader(bitbucket.HeaderRequestUUID)), "{}"))
	if err != nil {
		h.rejectWebhook(c, rcv, true, domain.WebhookMalformed, event)
		return domain.WebhookMalformed, errInvalid("invalid_header", "the X-Request-UUID header is missing or not a UUID")
	}
	if strings.TrimSpace(event) == "" {
		h.rejectWebhook(c, rcv, true, domain.WebhookMalformed, event)
		return domain.WebhookMalformed, errInvalid("invalid_header", "the X-Event-Key header is missing")
	}
	action, err := webhooks.Parse(event, body)
	if err != nil {
		h.deps.Logger.WarnContext(ctx, "webhook delivery refused: payload not usable",
			"installation", rcv.InstallationID, "event", event, "request_uuid", requestUUID, "reason", err.Error(), "bytes", len(body))
		h.rejectWebhook(c, rcv, true, domain.WebhookMalformed, event)
		return domain.WebhookMalformed, errInvalid("malformed_payload", err.Error())
	}
	raw, err := action.JSON()
	if err != nil {
		return domain.WebhookUnavailable, failed("encode the webhook action", err)
	}
	digest := sha256.Sum256(body)
	delivery := store.WebhookDelivery{
		TenantID: rcv.TenantID, InstallationID: rcv.InstallationID, DeliveryUUID: requestUUID, EventKey: event,
		HookUUID: store.NormalizeHookUUID(hookUUID), Attempt: attemptNumber(c.GetHeader(bitbucket.HeaderAttemptNumber)),
		RepositoryUUID: action.Repository.UUID, Action: raw, BodySHA256: digest[:], BodyGzip: gzipBytes(body),
		ReceivedAt: received.UTC(), NextAttemptAt: received.Add(webhooks.RedriveGrace).UTC(),
	}
	inserted, err := h.deps.Store.RecordWebhookDelivery(ctx, delivery)
	if err != nil {
		return domain.WebhookUnavailable, failed("store the webhook delivery", err)
	}
	if !inserted {
		c.JSON(http.StatusOK, gin.H{"status": domain.WebhookDuplicate, "delivery": requestUUID})
		return domain.WebhookDuplicate, nil
	}
	// A full queue (or no dispatcher) leaves the row to the re-driver; the answer is the same.
	h.deps.Webhooks.Submit(delivery)
	c.JSON(http.StatusAccepted, gin.H{"status": domain.WebhookAccepted, "delivery": requestUUID})
	return domain.WebhookAccepted, nil
}

// rejectWebhook counts a refused delivery in the installation's webhook health.
func (h *handlers) rejectWebhook(c *gin.Context, rcv store.WebhookReceiver, known bool, reason, event string) {
	if !known {
		return
	}
	if err := h.deps.Store.RecordWebhookRejection(c.Request.Context(), rcv.TenantID, rcv.InstallationID, reason, event); err != nil {
		h.deps.Logger.WarnContext(c.Request.Context(), "record webhook rejection", "installation", rcv.InstallationID, "error", err)
	}
}

func attemptNumber(header string) int {
	n := 0
	for _, r := range strings.TrimSpace(header) {
		if r < '0' || r > '9' || n > 1000 {
			return 1
		}
		n = n*10 + int(r-'0')
	}
	return max(n, 1)
}

// gzipWriters are reused: a fresh writer allocates its compression window, which under a
// burst of deliveries costs more than the compression.
var gzipWriters = sync.Pool{New: func() any { return gzip.NewWriter(nil) }}

// gzipBytes keeps the raw body small in the outbox (payloads are repetitive JSON).
func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzipWriters.Get().(*gzip.Writer)
	defer gzipWriters.Put(zw)
	zw.Reset(&buf)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}
