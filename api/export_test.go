package api

// SetBeforeArchiveStream installs a hook that runs after an archive is prepared on disk and
// before it is sent; the returned func removes it.
func SetBeforeArchiveStream(fn func(dir string)) (restore func()) {
	beforeArchiveStream = fn
	return func() { beforeArchiveStream = nil }
}
