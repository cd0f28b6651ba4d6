import CMountWorkerKitSupport
import Glibc
import MountWorkerKit

/// Cache lifetimes the kernel is given, in seconds.
struct MirrorTimeouts: Sendable {
  var attributes: Double = 1
  var entries: Double = 1
  var negativeEntries: Double = 0
}

// The connection: what the mirror asks of the kernel, and what it knows of SOURCE for that.
extension MirrorFileSystem {
  /// statfs(2) magic numbers of disk and memory filesystems: ext2/3/4, XFS, Btrfs, F2FS, ZFS,
  /// bcachefs, tmpfs, ramfs. Network and FUSE filesystems are not among them: they may report
  /// deferred write errors on close, which flush passes on.
  static let localFilesystemTypes: Set<Int64> = [
    0xEF53, 0x5846_5342, 0x9123_683E, 0xF2F5_2010, 0x2FC1_2FC1, 0xCA45_1A4E, 0x0102_1994,
    0x8584_58F6,
  ]

  /// statfs(2) magic numbers of filesystems stacked on others: overlayfs and FUSE. Backing
  /// files there need one more level of stacking for passthrough.
  static let stackedFilesystemTypes: Set<Int64> = [0x794C_7630, 0x6573_5546]

  /// Passthrough where asked for: writes then bypass the worker, and the kernel itself keeps
  /// attributes right (after each write it extends the size it caches and drops its cached
  /// size, mtime and ctime, so the next stat asks the worker). `passthrough=on` refuses a
  /// connection without it.
  func initialize(_ connection: inout FUSEConnection) throws(FUSEWorkerError) {
    connection.wanted.insert([.readdirPlus, .readdirPlusAuto, .cacheSymlinks, .spliceWrite])
    // The kernel clears set-id bits through setattr, which this mirror performs with the
    // caller's view; a root worker writing through its own descriptor would not clear them.
    connection.wanted.remove(.handleKillPrivileges)
    connection.maxWrite = 1 << 20
    connection.maxBackground = 64
    connection.congestionThreshold = 48
    connection.timeGranularity = 1
    guard passthrough != .off else { return }
    if passthrough == .on, let reason = connection.passthroughUnavailable {
      throw FUSEWorkerError(
        "passthrough=on, but passthrough is unavailable: \(reason)", errno: ENOTSUP)
    }
    connection.passthrough = true
    connection.backingStackDepth = sourceStackDepth
  }
}
