import CFuse3

/// Optional kernel features, negotiated once in ``FUSEFileSystem/initialize(_:)``.
public struct FUSECapabilities: OptionSet, Sendable, Hashable {
  public let rawValue: UInt32
  public init(rawValue: UInt32) { self.rawValue = rawValue }

  /// Several reads of one file may be in flight at once.
  public static let asyncRead = FUSECapabilities(FUSE_CAP_ASYNC_READ)
  /// The filesystem handles POSIX locks itself (otherwise the kernel keeps them locally).
  public static let posixLocks = FUSECapabilities(FUSE_CAP_POSIX_LOCKS)
  /// open with `O_TRUNC` reaches the filesystem instead of a separate setattr.
  public static let atomicOpenTruncate = FUSECapabilities(FUSE_CAP_ATOMIC_O_TRUNC)
  /// The filesystem can look up "." and "..", for NFS export.
  public static let exportSupport = FUSECapabilities(FUSE_CAP_EXPORT_SUPPORT)
  /// The kernel does not apply the caller's umask to create modes; the filesystem does.
  public static let dontMask = FUSECapabilities(FUSE_CAP_DONT_MASK)
  /// Reply data may be spliced into the kernel (``FUSEReadReply/file(descriptor:offset:length:)``).
  public static let spliceWrite = FUSECapabilities(FUSE_CAP_SPLICE_WRITE)
  /// Spliced reply pages may be moved instead of copied.
  public static let spliceMove = FUSECapabilities(FUSE_CAP_SPLICE_MOVE)
  /// Requests are spliced out of the kernel (only helps filesystems that consume write data as a
  /// descriptor, which this kit does not; it costs a syscall per request). Not offered: every
  /// request is read through the kit, which completes INIT and open replies for passthrough.
  public static let spliceRead = FUSECapabilities(FUSE_CAP_SPLICE_READ)
  /// The filesystem handles flock(2) itself (otherwise the kernel keeps such locks locally).
  public static let flockLocks = FUSECapabilities(FUSE_CAP_FLOCK_LOCKS)
  public static let ioctlOnDirectories = FUSECapabilities(FUSE_CAP_IOCTL_DIR)
  /// The kernel drops cached pages when it sees a file's size or mtime change.
  public static let autoInvalidateData = FUSECapabilities(FUSE_CAP_AUTO_INVAL_DATA)
  /// Listings carry attributes (``FUSEFileSystem/readdirplus(_:inode:handle:offset:into:)``).
  public static let readdirPlus = FUSECapabilities(FUSE_CAP_READDIRPLUS)
  /// The kernel chooses per listing between readdir and readdirplus.
  public static let readdirPlusAuto = FUSECapabilities(FUSE_CAP_READDIRPLUS_AUTO)
  /// Direct I/O requests may be in flight in parallel.
  public static let asyncDirectIO = FUSECapabilities(FUSE_CAP_ASYNC_DIO)
  /// The kernel caches writes and sends them later (faster; written data lives only in the
  /// kernel until it is flushed, and is lost if the worker dies first).
  public static let writebackCache = FUSECapabilities(FUSE_CAP_WRITEBACK_CACHE)
  /// Lookups and listings in one directory may run in parallel.
  public static let parallelDirectoryOperations = FUSECapabilities(FUSE_CAP_PARALLEL_DIROPS)
  /// The filesystem enforces POSIX ACLs itself.
  public static let posixACL = FUSECapabilities(FUSE_CAP_POSIX_ACL)
  /// The filesystem clears set-user-id bits on write and chown itself.
  public static let handleKillPrivileges = FUSECapabilities(FUSE_CAP_HANDLE_KILLPRIV)
  /// The kernel caches symlink targets.
  public static let cacheSymlinks = FUSECapabilities(FUSE_CAP_CACHE_SYMLINKS)
  /// The filesystem never needs opendir (the kernel skips it after the first ENOSYS).
  public static let noOpendirSupport = FUSECapabilities(FUSE_CAP_NO_OPENDIR_SUPPORT)
  /// Cached data is dropped only when the filesystem says so.
  public static let explicitInvalidateData = FUSECapabilities(FUSE_CAP_EXPLICIT_INVAL_DATA)

  private init(_ bit: Int32) { rawValue = UInt32(bitPattern: bit) }
}

/// The connection's parameters as offered by the kernel, to adjust in
/// ``FUSEFileSystem/initialize(_:)``. Changes to ``wanted`` outside ``capable`` are ignored.
public struct FUSEConnection: Sendable {
  public let protocolMajor: UInt32
  public let protocolMinor: UInt32
  /// What this kernel supports.
  public let capable: FUSECapabilities
  /// What the filesystem asks for. The kit starts from libfuse's defaults (async reads,
  /// parallel directory operations, automatic data invalidation, atomic O_TRUNC, ...) minus
  /// ``FUSECapabilities/readdirPlus``, which a filesystem turns on when it implements
  /// ``FUSEFileSystem/readdirplus(_:inode:handle:offset:into:)``.
  public var wanted: FUSECapabilities
  /// Largest write request in bytes (libfuse's buffer allows up to 1 MiB).
  public var maxWrite: UInt32
  /// Largest read request in bytes (0 = no limit beyond the kernel's); set with the
  /// `max_read=` mount option, which libfuse requires to match.
  public let maxRead: UInt32
  /// Largest readahead in bytes; can only be lowered.
  public var maxReadahead: UInt32
  /// Background requests (readahead, async direct I/O) the kernel keeps in flight.
  public var maxBackground: UInt32
  public var congestionThreshold: UInt32
  /// Granularity of the filesystem's timestamps in nanoseconds (1 = exact).
  public var timeGranularity: UInt32
  /// Why FUSE passthrough cannot be used here (the kernel does not offer it, or the worker lacks
  /// CAP_SYS_ADMIN in the initial user namespace); nil when it can.
  public let passthroughUnavailable: String?
  /// Ask for FUSE passthrough: opens answered with ``FUSEOpenReply/passthrough`` then have
  /// their reads, writes and mmap done by the kernel on that descriptor's file, without a
  /// request to the worker. Without it (or where it is unavailable, which the kit says once on
  /// stderr) those opens take the ordinary path. Not combined with
  /// ``FUSECapabilities/writebackCache``.
  public var passthrough: Bool = false
  /// How deeply the filesystems of backing files may be stacked themselves: 0 for disk and
  /// memory filesystems, 1 to allow overlayfs or FUSE below (the most the kernel allows). A
  /// mount with 1 cannot in turn be a layer of overlayfs. A file beyond it is served the
  /// ordinary way.
  public var backingStackDepth: UInt32 = 0

  init(_ conn: fuse_conn_info, passthroughUnavailable: String?) {
    self.passthroughUnavailable = passthroughUnavailable
    protocolMajor = conn.proto_major
    protocolMinor = conn.proto_minor
    capable = FUSECapabilities(rawValue: conn.capable)
    wanted = FUSECapabilities(rawValue: conn.want).subtracting([.readdirPlus, .readdirPlusAuto])
    maxWrite = conn.max_write
    maxRead = conn.max_read
    maxReadahead = conn.max_readahead
    maxBackground = conn.max_background
    congestionThreshold = conn.congestion_threshold
    timeGranularity = conn.time_gran
  }

  func apply(to conn: UnsafeMutablePointer<fuse_conn_info>) {
    conn.pointee.want = wanted.intersection(capable).rawValue
    conn.pointee.max_write = maxWrite
    conn.pointee.max_readahead = min(maxReadahead, conn.pointee.max_readahead)
    conn.pointee.max_background = maxBackground
    conn.pointee.congestion_threshold = congestionThreshold
    conn.pointee.time_gran = timeGranularity
  }
}
