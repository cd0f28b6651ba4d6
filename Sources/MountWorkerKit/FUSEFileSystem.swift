import Glibc

/// A filesystem served through the FUSE low-level protocol: inode-based operations, each
/// answered by returning a value or throwing a ``FUSEError`` (the errno the caller sees).
///
/// Operations run on libfuse's worker threads, several at once, so the type must be safe to
/// call concurrently. They must not block forever: a blocked operation blocks the process that
/// called into the mount. Every operation has a default that behaves like libfuse when the
/// operation is missing, mostly `ENOSYS`; the kernel then stops sending some of them (flush,
/// fsync, access, xattrs, fallocate, copy_file_range, lseek) and falls back to its own handling.
///
/// Names (``FUSEName``) and buffers passed in are only valid until the operation returns.
public protocol FUSEFileSystem: AnyObject, Sendable {
  /// Negotiates the connection before the first request. Called once, on the FUSE `init`
  /// request; the kit reports the worker ready right after it returns. Throwing refuses the
  /// connection: the kernel fails every access, and ``FUSEWorker/run()`` unmounts and throws
  /// the error.
  func initialize(_ connection: inout FUSEConnection) throws(FUSEWorkerError)

  /// The session is ending (unmounted or stopped): release what the filesystem holds.
  func destroy()

  /// Resolves `name` in the directory `parent`. A found entry adds one lookup to its inode;
  /// ``FUSEEntry/negative(timeout:)`` or `ENOENT` report a missing name.
  func lookup(_ request: FUSERequest, parent: FUSEInode, name: FUSEName) throws(FUSEError)
    -> FUSEEntry

  /// The kernel dropped `lookups` references to `inode`; at zero the id may be reused.
  /// Also used for the batched form (`forget_multi`), and by the kit itself when an entry could
  /// not be delivered (the caller was interrupted), which is why it takes no request.
  func forget(inode: FUSEInode, lookups: UInt64)

  /// The attributes of `inode`; `handle` is set when the caller used an open file (fstat).
  func getattr(_ request: FUSERequest, inode: FUSEInode, handle: UInt64?) throws(FUSEError)
    -> FUSEAttributeReply

  /// chmod, chown, truncate and utimens; answers with the attributes after the change.
  func setattr(
    _ request: FUSERequest, inode: FUSEInode, changes: FUSESetAttributes, handle: UInt64?
  ) throws(FUSEError) -> FUSEAttributeReply

  /// The target of the symlink `inode`.
  func readlink(_ request: FUSERequest, inode: FUSEInode) throws(FUSEError) -> String

  /// Creates a file node (FIFO, socket, device, or regular file); `mode` includes the type.
  func mknod(
    _ request: FUSERequest, parent: FUSEInode, name: FUSEName, mode: mode_t, device: dev_t
  ) throws(FUSEError) -> FUSEEntry

  func mkdir(_ request: FUSERequest, parent: FUSEInode, name: FUSEName, mode: mode_t)
    throws(FUSEError) -> FUSEEntry

  func unlink(_ request: FUSERequest, parent: FUSEInode, name: FUSEName) throws(FUSEError)

  func rmdir(_ request: FUSERequest, parent: FUSEInode, name: FUSEName) throws(FUSEError)

  /// Creates the symlink `name` in `parent` pointing to `target`.
  func symlink(_ request: FUSERequest, target: FUSEName, parent: FUSEInode, name: FUSEName)
    throws(FUSEError) -> FUSEEntry

  func rename(
    _ request: FUSERequest, parent: FUSEInode, name: FUSEName, newParent: FUSEInode,
    newName: FUSEName, flags: FUSERenameFlags
  ) throws(FUSEError)

  /// Creates the hard link `newName` in `newParent` to `inode`.
  func link(_ request: FUSERequest, inode: FUSEInode, newParent: FUSEInode, newName: FUSEName)
    throws(FUSEError) -> FUSEEntry

  /// Opens a file; `flags` are open(2)'s (without `O_CREAT`, `O_EXCL`, `O_NOCTTY`).
  func open(_ request: FUSERequest, inode: FUSEInode, flags: Int32) throws(FUSEError)
    -> FUSEOpenReply

  /// Reads up to `size` bytes at `offset`; fewer bytes mean end of file.
  func read(_ request: FUSERequest, inode: FUSEInode, handle: UInt64, offset: Int64, size: Int)
    throws(FUSEError) -> FUSEReadReply

  /// Writes `data` at `offset` and returns how many bytes were written.
  func write(
    _ request: FUSERequest, inode: FUSEInode, handle: UInt64, offset: Int64,
    data: UnsafeRawBufferPointer
  ) throws(FUSEError) -> Int

  /// A descriptor of the open file was closed (close(2) reports this error). May come several
  /// times per open, or never.
  func flush(_ request: FUSERequest, inode: FUSEInode, handle: UInt64) throws(FUSEError)

  /// The last descriptor of an open file is gone; release `handle`. Errors are not reported.
  /// The kit also calls it when an open could not be delivered, hence no request.
  func release(inode: FUSEInode, handle: UInt64, flags: Int32)

  /// Makes the file's data (and metadata unless `dataOnly`) durable.
  func fsync(_ request: FUSERequest, inode: FUSEInode, handle: UInt64, dataOnly: Bool)
    throws(FUSEError)

  func opendir(_ request: FUSERequest, inode: FUSEInode, flags: Int32) throws(FUSEError)
    -> FUSEOpenReply

  /// Lists the directory from `offset` into `buffer`, as many entries as fit. An empty buffer
  /// means the end of the listing. An error thrown after entries were added ends this part of
  /// the listing there (the entries are sent); the kernel asks again from the next offset.
  func readdir(
    _ request: FUSERequest, inode: FUSEInode, handle: UInt64, offset: Int64,
    into buffer: inout FUSEDirectoryBuffer
  ) throws(FUSEError)

  /// ``readdir(_:inode:handle:offset:into:)`` with a full lookup per entry
  /// (``FUSEDirectoryBuffer/addPlus(name:entry:nextOffset:)``). Only called when
  /// ``initialize(_:)`` adds ``FUSECapabilities/readdirPlus``.
  func readdirplus(
    _ request: FUSERequest, inode: FUSEInode, handle: UInt64, offset: Int64,
    into buffer: inout FUSEDirectoryBuffer
  ) throws(FUSEError)

  /// The directory handle is closed; like ``release(inode:handle:flags:)`` it takes no request.
  func releasedir(inode: FUSEInode, handle: UInt64)

  func fsyncdir(_ request: FUSERequest, inode: FUSEInode, handle: UInt64, dataOnly: Bool)
    throws(FUSEError)

  /// statfs(2) of the filesystem containing `inode`.
  func statfs(_ request: FUSERequest, inode: FUSEInode) throws(FUSEError) -> statvfs

  /// setxattr(2); `flags` are `XATTR_CREATE` / `XATTR_REPLACE`.
  func setxattr(
    _ request: FUSERequest, inode: FUSEInode, name: FUSEName, value: UnsafeRawBufferPointer,
    flags: Int32
  ) throws(FUSEError)

  /// getxattr(2) semantics: with an empty `buffer`, return the value's size; otherwise copy the
  /// value into `buffer` and return its length, or throw `ERANGE` if it does not fit.
  func getxattr(
    _ request: FUSERequest, inode: FUSEInode, name: FUSEName,
    into buffer: UnsafeMutableRawBufferPointer
  ) throws(FUSEError) -> Int

  /// listxattr(2) semantics: NUL-separated names, same size rules as
  /// ``getxattr(_:inode:name:into:)``.
  func listxattr(
    _ request: FUSERequest, inode: FUSEInode, into buffer: UnsafeMutableRawBufferPointer
  ) throws(FUSEError) -> Int

  func removexattr(_ request: FUSERequest, inode: FUSEInode, name: FUSEName) throws(FUSEError)

  /// access(2) check of `mask` (`R_OK`, `W_OK`, `X_OK`, `F_OK`); not sent when the mount uses
  /// `default_permissions`, because the kernel checks then.
  func access(_ request: FUSERequest, inode: FUSEInode, mask: Int32) throws(FUSEError)

  /// Creates and opens `name` (open with `O_CREAT`). One lookup is counted for the entry.
  func create(
    _ request: FUSERequest, parent: FUSEInode, name: FUSEName, mode: mode_t, flags: Int32
  ) throws(FUSEError) -> (entry: FUSEEntry, open: FUSEOpenReply)

  /// fallocate(2) on an open file.
  func fallocate(
    _ request: FUSERequest, inode: FUSEInode, handle: UInt64, mode: Int32, offset: Int64,
    length: Int64
  ) throws(FUSEError)

  /// copy_file_range(2) between two open files; returns the bytes copied.
  func copyFileRange(
    _ request: FUSERequest, from source: FUSEInode, handle sourceHandle: UInt64,
    offset sourceOffset: Int64, to target: FUSEInode, handle targetHandle: UInt64,
    offset targetOffset: Int64, length: Int, flags: UInt32
  ) throws(FUSEError) -> Int

  /// lseek(2) with `SEEK_DATA` or `SEEK_HOLE` (the kernel handles the other forms itself).
  func lseek(
    _ request: FUSERequest, inode: FUSEInode, handle: UInt64, offset: Int64, whence: Int32
  ) throws(FUSEError) -> Int64
}

extension FUSEFileSystem {
  public func initialize(_ connection: inout FUSEConnection) {}
  public func destroy() {}

  public func lookup(_ request: FUSERequest, parent: FUSEInode, name: FUSEName)
    throws(FUSEError) -> FUSEEntry
  { throw .notImplemented }

  public func forget(inode: FUSEInode, lookups: UInt64) {}

  public func getattr(_ request: FUSERequest, inode: FUSEInode, handle: UInt64?)
    throws(FUSEError) -> FUSEAttributeReply
  { throw .notImplemented }

  public func setattr(
    _ request: FUSERequest, inode: FUSEInode, changes: FUSESetAttributes, handle: UInt64?
  ) throws(FUSEError) -> FUSEAttributeReply { throw .notImplemented }

  public func readlink(_ request: FUSERequest, inode: FUSEInode) throws(FUSEError) -> String {
    throw .notImplemented
  }

  public func mknod(
    _ request: FUSERequest, parent: FUSEInode, name: FUSEName, mode: mode_t, device: dev_t
  ) throws(FUSEError) -> FUSEEntry { throw .notImplemented }

  public func mkdir(_ request: FUSERequest, parent: FUSEInode, name: FUSEName, mode: mode_t)
    throws(FUSEError) -> FUSEEntry
  { throw .notImplemented }

  public func unlink(_ request: FUSERequest, parent: FUSEInode, name: FUSEName)
    throws(FUSEError)
  { throw .notImplemented }

  public func rmdir(_ request: FUSERequest, parent: FUSEInode, name: FUSEName)
    throws(FUSEError)
  { throw .notImplemented }

  public func symlink(
    _ request: FUSERequest, target: FUSEName, parent: FUSEInode, name: FUSEName
  ) throws(FUSEError) -> FUSEEntry { throw .notImplemented }

  public func rename(
    _ request: FUSERequest, parent: FUSEInode, name: FUSEName, newParent: FUSEInode,
    newName: FUSEName, flags: FUSERenameFlags
  ) throws(FUSEError) { throw .notImplemented }

  public func link(
    _ request: FUSERequest, inode: FUSEInode, newParent: FUSEInode, newName: FUSEName
  ) throws(FUSEError) -> FUSEEntry { throw .notImplemented }

  public func open(_ request: FUSERequest, inode: FUSEInode, flags: Int32) throws(FUSEError)
    -> FUSEOpenReply
  { FUSEOpenReply() }

  public func read(
    _ request: FUSERequest, inode: FUSEInode, handle: UInt64, offset: Int64, size: Int
  ) throws(FUSEError) -> FUSEReadReply { throw .notImplemented }

  public func write(
    _ request: FUSERequest, inode: FUSEInode, handle: UInt64, offset: Int64,
    data: UnsafeRawBufferPointer
  ) throws(FUSEError) -> Int { throw .notImplemented }

  public func flush(_ request: FUSERequest, inode: FUSEInode, handle: UInt64) throws(FUSEError) {
    throw .notImplemented
  }

  public func release(inode: FUSEInode, handle: UInt64, flags: Int32) {}

  public func fsync(_ request: FUSERequest, inode: FUSEInode, handle: UInt64, dataOnly: Bool)
    throws(FUSEError)
  { throw .notImplemented }

  public func opendir(_ request: FUSERequest, inode: FUSEInode, flags: Int32)
    throws(FUSEError) -> FUSEOpenReply
  { FUSEOpenReply() }

  public func readdir(
    _ request: FUSERequest, inode: FUSEInode, handle: UInt64, offset: Int64,
    into buffer: inout FUSEDirectoryBuffer
  ) throws(FUSEError) { throw .notImplemented }

  public func readdirplus(
    _ request: FUSERequest, inode: FUSEInode, handle: UInt64, offset: Int64,
    into buffer: inout FUSEDirectoryBuffer
  ) throws(FUSEError) { throw .notImplemented }

  public func releasedir(inode: FUSEInode, handle: UInt64) {}

  public func fsyncdir(_ request: FUSERequest, inode: FUSEInode, handle: UInt64, dataOnly: Bool)
    throws(FUSEError)
  { throw .notImplemented }

  /// libfuse's answer without a statfs operation: an empty filesystem with 255-byte names.
  public func statfs(_ request: FUSERequest, inode: FUSEInode) throws(FUSEError) -> statvfs {
    var result = statvfs()
    result.f_namemax = 255
    result.f_bsize = 512
    return result
  }

  public func setxattr(
    _ request: FUSERequest, inode: FUSEInode, name: FUSEName, value: UnsafeRawBufferPointer,
    flags: Int32
  ) throws(FUSEError) { throw .notImplemented }

  public func getxattr(
    _ request: FUSERequest, inode: FUSEInode, name: FUSEName,
    into buffer: UnsafeMutableRawBufferPointer
  ) throws(FUSEError) -> Int { throw .notImplemented }

  public func listxattr(
    _ request: FUSERequest, inode: FUSEInode, into buffer: UnsafeMutableRawBufferPointer
  ) throws(FUSEError) -> Int { throw .notImplemented }

  public func removexattr(_ request: FUSERequest, inode: FUSEInode, name: FUSEName)
    throws(FUSEError)
  { throw .notImplemented }

  public func access(_ request: FUSERequest, inode: FUSEInode, mask: Int32) throws(FUSEError) {
    throw .notImplemented
  }

  public func create(
    _ request: FUSERequest, parent: FUSEInode, name: FUSEName, mode: mode_t, flags: Int32
  ) throws(FUSEError) -> (entry: FUSEEntry, open: FUSEOpenReply) { throw .notImplemented }

  public func fallocate(
    _ request: FUSERequest, inode: FUSEInode, handle: UInt64, mode: Int32, offset: Int64,
    length: Int64
  ) throws(FUSEError) { throw .notImplemented }

  public func copyFileRange(
    _ request: FUSERequest, from source: FUSEInode, handle sourceHandle: UInt64,
    offset sourceOffset: Int64, to target: FUSEInode, handle targetHandle: UInt64,
    offset targetOffset: Int64, length: Int, flags: UInt32
  ) throws(FUSEError) -> Int { throw .notImplemented }

  public func lseek(
    _ request: FUSERequest, inode: FUSEInode, handle: UInt64, offset: Int64, whence: Int32
  ) throws(FUSEError) -> Int64 { throw .notImplemented }
}
