package bitbucket

// eventKeys is every event key DecodeEvent understands (the Event* constants).
var eventKeys = map[string]bool{
	EventRepoPush: true, EventRepoFork: true, EventRepoUpdated: true, EventRepoCreated: true,
	EventRepoDeleted: true, EventRepoTransfer: true,
	EventRepoCommitStatusCreated: true, EventRepoCommitStatusUpdated: true,
	EventPullRequestCreated: true, EventPullRequestUpdated: true, EventPullRequestFulfilled: true,
	EventPullRequestRejected: true, EventPullRequestApproved: true, EventPullRequestUnapproved: true,
	EventPullRequestChangesRequest: true, EventPullRequestChangesRemoved: true,
	EventPullRequestCommentCreated: true, EventPullRequestCommentUpdated: true,
	EventPullRequestCommentDeleted: true, EventPullRequestCommentResolved: true,
	EventPullRequestCommentReopened: true,
}

// KnownEventKey reports whether DecodeEvent understands an X-Event-Key. Code that labels
// metrics or logs by event key uses it to keep keys sent by anyone else out of its labels.
func KnownEventKey(key string) bool { return eventKeys[key] }
