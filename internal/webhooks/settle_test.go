package webhooks

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gitsec/gitsec/internal/store"
)

// Fresh deliveries wait for a quiet intake, but never longer than the max wait.
func TestSettleHoldsABurstUntilQuiet(t *testing.T) {
	d := &Dispatcher{SettleQuiet: 150 * time.Millisecond, SettleMaxWait: 600 * time.Millisecond}
	d.init()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan store.WebhookDelivery, 100)
	go d.settle(ctx, out)

	start := time.Now()
	for range 3 {
		d.Submit(store.WebhookDelivery{DeliveryUUID: uuid.New()})
		time.Sleep(20 * time.Millisecond)
	}
	if len(out) != 0 {
		t.Fatal("deliveries were passed on while the burst went on")
	}
	for range 3 {
		select {
		case <-out:
		case <-time.After(2 * time.Second):
			t.Fatal("a held delivery was never passed on")
		}
	}
	if waited := time.Since(start); waited < 150*time.Millisecond {
		t.Fatalf("passed on after %s, before the intake was quiet", waited)
	}

	// A steady stream is flushed by the max wait.
	start = time.Now()
	stop := time.After(1500 * time.Millisecond)
	var firstOut time.Duration
feed:
	for {
		select {
		case <-stop:
			break feed
		case <-out:
			if firstOut == 0 {
				firstOut = time.Since(start)
			}
		case <-time.After(50 * time.Millisecond):
			d.Submit(store.WebhookDelivery{DeliveryUUID: uuid.New()})
		}
	}
	if firstOut == 0 || firstOut > 1200*time.Millisecond {
		t.Fatalf("a steady stream was first passed on after %s, want about the 600 ms max wait", firstOut)
	}
}
