import CFuse3
import CMountWorkerKitSupport
import Glibc

/// A FUSE node id: the number the kernel uses to name an inode of this filesystem.
///
/// The filesystem chooses the ids it hands out in ``FUSEEntry``; ``root`` is fixed by the protocol.
/// An id stays valid until ``FUSEFileSystem/forget(inode:lookups:)`` has brought its lookup
/// count to zero, so it may be a table index or an object address.
public struct FUSEInode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
  public var rawValue: UInt64
  public init(rawValue: UInt64) { self.rawValue = rawValue }
  public init(_ rawValue: UInt64) { self.rawValue = rawValue }

  /// The mountpoint's own inode, which the kernel never forgets.
  public static let root = FUSEInode(rawValue: UInt64(FUSE_ROOT_ID))

  public var description: String { "inode \(rawValue)" }
}

/// The failure of a filesystem operation: the errno the caller of the syscall will see.
public struct FUSEError: Error, Hashable, Sendable, CustomStringConvertible {
  /// A positive errno value such as `ENOENT`.
  public var errno: Int32

  public init(_ errno: Int32) { self.errno = errno }

  /// The calling thread's current `errno`, for use right after a failed syscall.
  /// An `errno` of 0 (a failure that set none) becomes `EIO`, never a success.
  public static var current: FUSEError {
    let code = Glibc.errno
    return FUSEError(code == 0 ? EIO : code)
  }

  public static let notPermitted = FUSEError(EPERM)
  public static let noEntry = FUSEError(ENOENT)
  public static let inputOutput = FUSEError(EIO)
  public static let accessDenied = FUSEError(EACCES)
  public static let exists = FUSEError(EEXIST)
  public static let notDirectory = FUSEError(ENOTDIR)
  public static let isDirectory = FUSEError(EISDIR)
  public static let invalid = FUSEError(EINVAL)
  public static let noSpace = FUSEError(ENOSPC)
  public static let readOnly = FUSEError(EROFS)
  public static let outOfRange = FUSEError(ERANGE)
  public static let notImplemented = FUSEError(ENOSYS)
  public static let notEmpty = FUSEError(ENOTEMPTY)
  public static let noData = FUSEError(ENODATA)
  public static let notSupported = FUSEError(EOPNOTSUPP)

  public var description: String { String(cString: strerror(errno)) + " (errno \(errno))" }
}

/// A file name from a request, as the kernel sent it: NUL-terminated, no slash.
///
/// It points into the request buffer and is valid only until the operation returns. Pass
/// ``cString`` straight to `*at()` syscalls; use ``string`` when a Swift `String` is needed.
public struct FUSEName: CustomStringConvertible {
  public let cString: UnsafePointer<CChar>

  public init(_ cString: UnsafePointer<CChar>) { self.cString = cString }

  public var string: String { String(cString: cString) }
  public var description: String { string }

  /// Whether the name is `.` or `..`, which directory listings contain but lookups never ask for.
  public var isDotOrDotDot: Bool {
    cString[0] == 0x2E && (cString[1] == 0 || (cString[1] == 0x2E && cString[2] == 0))
  }
}

/// The attributes of an inode, in the kernel's `struct stat` layout.
///
/// The kernel takes `st_ino`, `st_mode`, `st_nlink`, `st_uid`, `st_gid`, `st_rdev`, `st_size`,
/// `st_blocks`, `st_blksize` and the three timestamps from it.
public struct FUSEAttributes: Sendable {
  public var raw: Glibc.stat

  public init(_ raw: Glibc.stat) { self.raw = raw }

  /// Attributes built from scratch, for filesystems that do not mirror an existing file.
  /// `mode` includes the file type (`S_IFREG | 0o644`).
  public init(
    inode: UInt64, mode: mode_t, linkCount: Int = 1, size: Int64 = 0,
    uid: uid_t = getuid(), gid: gid_t = getgid(), modified: timespec = timespec()
  ) {
    var raw = Glibc.stat()
    raw.st_ino = ino_t(inode)
    raw.st_mode = mode
    raw.st_nlink = nlink_t(linkCount)
    raw.st_size = off_t(size)
    raw.st_blocks = blkcnt_t((size + 511) / 512)
    raw.st_blksize = 4096
    raw.st_uid = uid
    raw.st_gid = gid
    raw.st_atim = modified
    raw.st_mtim = modified
    raw.st_ctim = modified
    self.raw = raw
  }

  public var mode: mode_t { raw.st_mode }
  public var size: Int64 { Int64(raw.st_size) }
}

/// The answer to a name lookup (and to mknod, mkdir, symlink, link, create).
///
/// Every entry with a non-zero ``inode`` that reaches the kernel adds one to that inode's lookup
/// count; the kernel gives it back through ``FUSEFileSystem/forget(inode:lookups:)``.
public struct FUSEEntry: Sendable {
  public var inode: FUSEInode
  /// Distinguishes reuses of one node id; 0 when ids are never reused while the kernel knows them.
  public var generation: UInt64
  public var attributes: FUSEAttributes
  /// Seconds the kernel may trust ``attributes`` without asking again.
  public var attributeTimeout: Double
  /// Seconds the kernel may trust the name-to-inode binding without asking again.
  public var entryTimeout: Double

  public init(
    inode: FUSEInode, generation: UInt64 = 0, attributes: FUSEAttributes,
    attributeTimeout: Double, entryTimeout: Double
  ) {
    self.inode = inode
    self.generation = generation
    self.attributes = attributes
    self.attributeTimeout = attributeTimeout
    self.entryTimeout = entryTimeout
  }

  /// "No such name", cached by the kernel for `timeout` seconds; `0` behaves like `ENOENT`.
  public static func negative(timeout: Double) -> FUSEEntry {
    FUSEEntry(
      inode: FUSEInode(0), attributes: FUSEAttributes(Glibc.stat()), attributeTimeout: 0,
      entryTimeout: timeout)
  }

  var parameter: fuse_entry_param {
    fuse_entry_param(
      ino: inode.rawValue, generation: generation, attr: attributes.raw,
      attr_timeout: attributeTimeout, entry_timeout: entryTimeout)
  }
}

/// The answer to getattr and setattr.
public struct FUSEAttributeReply: Sendable {
  public var attributes: FUSEAttributes
  /// Seconds the kernel may trust ``attributes`` without asking again.
  public var timeout: Double

  public init(attributes: FUSEAttributes, timeout: Double) {
    self.attributes = attributes
    self.timeout = timeout
  }
}

/// The answer to open, opendir and create: the handle the kernel passes back on every later
/// operation on this open file, and how the kernel should cache it.
public struct FUSEOpenReply: Sendable {
  /// Any value; 0 when the filesystem keeps no per-open state.
  public var handle: UInt64
  /// Keep the page cache from earlier opens instead of dropping it (files only).
  public var keepCache: Bool
  /// Bypass the page cache: every read and write reaches the filesystem as sent.
  public var directIO: Bool
  /// The file has no meaningful offsets (a stream).
  public var nonSeekable: Bool
  /// Let the kernel cache directory listings of this directory (opendir only).
  public var cacheDirectory: Bool
  /// Do not send flush when a descriptor of this file is closed.
  public var noFlush: Bool
  /// A descriptor of the opened regular file (any access mode, even `O_PATH`) whose file the
  /// kernel reads, writes and maps directly when the connection uses
  /// ``FUSEConnection/passthrough``: those operations then never reach the worker, and
  /// ``keepCache`` does not apply. The kit registers the file per node (later opens of the
  /// node share the first one's registration, so it must be the same file) until the node's
  /// last such open is released; the descriptor only needs to stay open during the call.
  /// Once a node has open files passing through, every open of it must pass through (the
  /// kernel fails the others with EIO). Ignored with ``nonSeekable``.
  public var passthrough: Int32?

  public init(
    handle: UInt64 = 0, keepCache: Bool = false, directIO: Bool = false,
    nonSeekable: Bool = false, cacheDirectory: Bool = false, noFlush: Bool = false,
    passthrough: Int32? = nil
  ) {
    self.passthrough = passthrough
    self.handle = handle
    self.keepCache = keepCache
    self.directIO = directIO
    self.nonSeekable = nonSeekable
    self.cacheDirectory = cacheDirectory
    self.noFlush = noFlush
  }

  func apply(to info: UnsafeMutablePointer<fuse_file_info>) {
    info.pointee.fh = handle
    info.pointee.keep_cache = keepCache ? 1 : 0
    info.pointee.direct_io = directIO ? 1 : 0
    info.pointee.nonseekable = nonSeekable ? 1 : 0
    info.pointee.cache_readdir = cacheDirectory ? 1 : 0
    info.pointee.noflush = noFlush ? 1 : 0
  }
}

/// The data that answers a read.
public enum FUSEReadReply: Sendable {
  /// `length` bytes of an open descriptor from `offset` (fewer at end of file). The kit moves
  /// them to the kernel without copying them through Swift, with splice(2) where allowed.
  /// The descriptor must stay open until the read operation has returned.
  case file(descriptor: Int32, offset: Int64, length: Int)
  /// The bytes themselves; fewer than requested means end of file.
  case bytes([UInt8])
}

/// A change of one timestamp in setattr.
public enum FUSETimeChange: Sendable, Equatable {
  /// The current time, as `touch` without `-d` asks.
  case now
  case time(timespec)

  public static func == (lhs: FUSETimeChange, rhs: FUSETimeChange) -> Bool {
    switch (lhs, rhs) {
    case (.now, .now): true
    case (.time(let a), .time(let b)): a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec
    default: false
    }
  }

  /// The `timespec` that utimensat(2) takes for this change.
  public var timespec: Glibc.timespec {
    switch self {
    case .now: Glibc.timespec(tv_sec: 0, tv_nsec: Int(MWK_UTIME_NOW))
    case .time(let time): time
    }
  }
}

/// What setattr asks to change; `nil` leaves that attribute alone.
public struct FUSESetAttributes: Sendable {
  /// Permission bits (no file type).
  public var mode: mode_t?
  public var uid: uid_t?
  public var gid: gid_t?
  /// The new length, as truncate(2) and ftruncate(2) take it.
  public var size: Int64?
  public var accessTime: FUSETimeChange?
  public var modificationTime: FUSETimeChange?

  public init(
    mode: mode_t? = nil, uid: uid_t? = nil, gid: gid_t? = nil, size: Int64? = nil,
    accessTime: FUSETimeChange? = nil, modificationTime: FUSETimeChange? = nil
  ) {
    self.mode = mode
    self.uid = uid
    self.gid = gid
    self.size = size
    self.accessTime = accessTime
    self.modificationTime = modificationTime
  }

  init(_ attributes: Glibc.stat, valid: Int32) {
    func has(_ bit: Int32) -> Bool { valid & bit != 0 }
    mode = has(FUSE_SET_ATTR_MODE) ? attributes.st_mode & 0o7777 : nil
    uid = has(FUSE_SET_ATTR_UID) ? attributes.st_uid : nil
    gid = has(FUSE_SET_ATTR_GID) ? attributes.st_gid : nil
    size = has(FUSE_SET_ATTR_SIZE) ? Int64(attributes.st_size) : nil
    accessTime =
      has(FUSE_SET_ATTR_ATIME_NOW)
      ? .now : has(FUSE_SET_ATTR_ATIME) ? .time(attributes.st_atim) : nil
    modificationTime =
      has(FUSE_SET_ATTR_MTIME_NOW)
      ? .now : has(FUSE_SET_ATTR_MTIME) ? .time(attributes.st_mtim) : nil
  }
}

/// The flags of rename(2)'s `renameat2` form.
public struct FUSERenameFlags: OptionSet, Sendable {
  public let rawValue: UInt32
  public init(rawValue: UInt32) { self.rawValue = rawValue }

  /// Fail with `EEXIST` instead of replacing an existing target.
  public static let noReplace = FUSERenameFlags(rawValue: 1)
  /// Swap source and target atomically; both must exist.
  public static let exchange = FUSERenameFlags(rawValue: 2)
  /// Leave a whiteout at the source (overlay filesystems).
  public static let whiteout = FUSERenameFlags(rawValue: 4)
}

/// Who sent a request: the calling process as the kernel saw it.
public struct FUSERequestContext: Sendable {
  public var uid: uid_t
  public var gid: gid_t
  public var pid: pid_t
  /// The caller's umask; the kernel has already applied it to modes unless the filesystem
  /// asked for ``FUSECapabilities/dontMask``.
  public var umask: mode_t
}

/// The request an operation answers. It is valid only until the operation returns; the kit
/// sends the reply from the operation's return value or thrown error.
public struct FUSERequest {
  let raw: fuse_req_t

  init(_ raw: fuse_req_t) { self.raw = raw }

  /// The calling process's credentials and umask.
  public var context: FUSERequestContext {
    let ctx = fuse_req_ctx(raw)!.pointee
    return FUSERequestContext(uid: ctx.uid, gid: ctx.gid, pid: ctx.pid, umask: ctx.umask)
  }

  /// The caller's supplementary groups (read from `/proc`, so not free); empty if unknown.
  public var supplementaryGroups: [gid_t] {
    var groups = [gid_t](repeating: 0, count: 64)
    var count = fuse_req_getgroups(raw, Int32(groups.count), &groups)
    if count > groups.count {
      groups = [gid_t](repeating: 0, count: Int(count))
      count = fuse_req_getgroups(raw, Int32(groups.count), &groups)
    }
    return count > 0 ? Array(groups.prefix(Int(count))) : []
  }

  /// Whether the caller has given up on this request (a signal interrupted its syscall).
  public var isInterrupted: Bool { fuse_req_interrupted(raw) != 0 }

  /// Whether the kernel resent this request after the worker that first read it died
  /// (`FUSE_NOTIFY_RESEND`): that worker may have carried it out already.
  public var isResent: Bool { mwk_current_request_is_resent() != 0 }
}
