// Package schedules creates Temporal Schedules idempotently: a fixed schedule ID is created the
// first time and updated in place afterwards, so every worker start (or every onboarding)
// converges on the configured interval and action instead of failing or duplicating.
package schedules

import (
	"context"
	"errors"
	"fmt"

	"go.temporal.io/api/serviceerror"
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

// Delete deletes the schedule with that ID; one that is already gone is fine (a repeated
// uninstall, or an installation that never finished onboarding). deleted reports which.
func Delete(ctx context.Context, c client.Client, id string) (deleted bool, err error) {
	err = c.ScheduleClient().GetHandle(ctx, id).Delete(ctx)
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("delete schedule %s: %w", id, err)
	}
	return true, nil
}
