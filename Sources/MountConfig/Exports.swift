// The duration format is part of the configuration's vocabulary: whoever imports MountConfig
// gets `parseDuration` and `formatDuration` as before the format moved into its own target.
@_exported import MountDuration
