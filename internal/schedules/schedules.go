// Package schedules creates Temporal Schedules idempotently: a fixed schedule ID is created the
// first time and updated in place afterwards, so every worker start (or every onboarding)
// converges on the configured interval and action instead of failing or duplicating.
package schedules

import (
	"context"
	"errors"
	"fmt"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
)

// Ensure creates the schedule described by opts, or updates the spec and action of the existing
// one with the same ID. created reports which happened.
func Ensure(ctx context.Context, c client.Client, opts client.ScheduleOptions) (created bool, err error) {
	sc := c.ScheduleClient()
	_, err = sc.Create(ctx, opts)
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, temporal.ErrScheduleAlreadyRunning) {
		return false, fmt.Errorf("create schedule %s: %w", opts.ID, err)
	}
	spec, action := opts.Spec, opts.Action
	err = sc.GetHandle(ctx, opts.ID).Update(ctx, client.ScheduleUpdateOptions{
		DoUpdate: func(in client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
			s := in.Description.Schedule
			s.Spec = &spec
			s.Action = action
			return &client.ScheduleUpdate{Schedule: &s}, nil
		},
	})
	if err != nil {
		return false, fmt.Errorf("update schedule %s: %w", opts.ID, err)
	}
	return false, nil
}
