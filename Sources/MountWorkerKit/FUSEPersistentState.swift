import CMountWorkerKitSupport
import Glibc
import Synchronization

/// Memory that outlives a crash of the worker: a memfd that the supervisor keeps for the mount
/// and that every worker of the mount maps, shared.
///
/// A worker that resumes a live FUSE connection finds here what its predecessor wrote: node
/// tables, open handles, whatever gives the kernel's node ids and file handles their meaning.
/// The kit only provides the bytes; their layout is the file system's. The predecessor may have
/// died at any instruction, so records must be written in an order that leaves them usable (or
/// harmlessly leaked) when it stops half-way.
///
/// ```swift
/// let state = try FUSEPersistentState.attach(size: 64 << 20)
/// if state.isInherited { /* rebuild from state.bytes */ } else { /* start empty (zeroed) */ }
/// ```
///
/// Without a supervisor (a worker started by hand) the memory is private to the process.
public final class FUSEPersistentState: @unchecked Sendable {
  /// The mapping; zero-filled when new. Pages cost memory only once written.
  public let bytes: UnsafeMutableRawBufferPointer
  /// Whether the bytes were written by an earlier worker of the same mount.
  public let isInherited: Bool
  let descriptor: Int32
  /// The kit's own part, after the file system's: the backing files of FUSE passthrough
  /// (``PassthroughRecords``). Nil in a state inherited from a worker that kept none.
  let kitBytes: UnsafeMutableRawBufferPointer?

  private init(
    bytes: UnsafeMutableRawBufferPointer, kitBytes: UnsafeMutableRawBufferPointer?,
    isInherited: Bool, descriptor: Int32
  ) {
    self.bytes = bytes
    self.kitBytes = kitBytes
    self.isInherited = isInherited
    self.descriptor = descriptor
  }

  /// The state of this mount: the predecessor's when the worker resumes a connection, otherwise
  /// a new one of `size` bytes. Call once, before ``FUSEWorker/run()``; later calls return the
  /// same state.
  public static func attach(size: Int) throws(FUSEWorkerError) -> FUSEPersistentState {
    try attached.withLock { attached throws(FUSEWorkerError) -> FUSEPersistentState in
      if let attached { return attached }
      let state: FUSEPersistentState
      if let inherited = ResumedConnection.shared?.stateDescriptor {
        state = try map(inherited, size: nil)
      } else {
        let descriptor = mwk_memfd("mountsup-state")
        guard descriptor >= 0 else {
          throw FUSEWorkerError("cannot create the worker state: memfd_create", errno: errno)
        }
        guard ftruncate(descriptor, off_t(kitOffset(after: size) + PassthroughRecords.size)) == 0
        else {
          let code = errno
          close(descriptor)
          throw FUSEWorkerError("cannot size the worker state", errno: code)
        }
        state = try map(descriptor, size: size)
      }
      attached = state
      return state
    }
  }

  /// Where the kit's part starts: after `size` bytes of the file system's, page-aligned.
  private static func kitOffset(after size: Int) -> Int {
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    return (size + page - 1) / page * page
  }

  /// Maps a new state of `size` bytes (with the kit's part after it), or an inherited one
  /// (`size` nil), whose kit part is recognised by its magic number at the end.
  private static func map(_ descriptor: Int32, size: Int?) throws(FUSEWorkerError)
    -> FUSEPersistentState
  {
    var length = kitOffset(after: size ?? 0) + PassthroughRecords.size
    if size == nil {
      var attributes = stat()
      guard fstat(descriptor, &attributes) == 0 else {
        throw FUSEWorkerError("cannot read the inherited worker state", errno: errno)
      }
      length = Int(attributes.st_size)
    }
    guard let base = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0),
      base != MAP_FAILED
    else { throw FUSEWorkerError("cannot map the worker state", errno: errno) }
    let whole = UnsafeMutableRawBufferPointer(start: base, count: length)
    let kitStart: Int?
    if let size {
      kitStart = kitOffset(after: size)
      PassthroughRecords.format(
        UnsafeMutableRawBufferPointer(rebasing: whole[kitStart!...]))
    } else {
      let candidate = length - PassthroughRecords.size
      kitStart =
        candidate >= 0
          && PassthroughRecords.isFormatted(UnsafeRawBufferPointer(rebasing: whole[candidate...]))
        ? candidate : nil
    }
    return FUSEPersistentState(
      bytes: UnsafeMutableRawBufferPointer(rebasing: whole[..<(size ?? kitStart ?? length)]),
      kitBytes: kitStart.map { UnsafeMutableRawBufferPointer(rebasing: whole[$0...]) },
      isInherited: size == nil, descriptor: descriptor)
  }

  private static let attached = Mutex<FUSEPersistentState?>(nil)
}

/// Whether the supervisor takes connections: it sets `MOUNTSUP_HANDOVER=1` when it reads the
/// descriptors a worker sends. A descriptor sent to a reader that never takes it would stay in
/// the socket and keep a dead worker's mount hanging instead of failing.
enum HandoverOffer {
  static let environmentVariable = "MOUNTSUP_HANDOVER"

  /// Read once per process, then removed from the environment (programs the worker starts are
  /// not the supervisor's workers).
  static let isOffered: Bool = {
    let offered = getenv(environmentVariable).map { String(cString: $0) == "1" } ?? false
    unsetenv(environmentVariable)
    return offered
  }()
}

/// The connection a successor worker was given: the first datagram on its supervisor channel
/// when `MOUNTSUP_RESUME=1` (see docs/worker-protocol.md).
struct ResumedConnection: Sendable {
  /// The environment variable that tells a worker to resume instead of mounting.
  static let environmentVariable = "MOUNTSUP_RESUME"

  let fuseDescriptor: Int32
  let stateDescriptor: Int32?
  let initRequest: [UInt8]

  /// Received once per process; nil when the worker is not resuming. A worker told to resume
  /// that cannot read its connection stops: mounting anew would hide the live mount.
  static let shared: ResumedConnection? = {
    guard let flag = getenv(environmentVariable), String(cString: flag) == "1" else {
      return nil
    }
    unsetenv(environmentVariable)
    guard let channel = SupervisorNotifier.shared.descriptor else {
      FUSEWorker.exit(failure: "told to resume, but no supervisor channel", errno: EBADF)
    }
    var fuse: Int32 = -1
    var state: Int32 = -1
    var request = [UInt8](repeating: 0, count: Int(MWK_INIT_REQUEST_MAX))
    var length = 0
    let code = mwk_receive_connection(
      channel, &fuse, &state, &request, request.count, &length)
    guard code == 0 else {
      FUSEWorker.exit(
        failure: "cannot receive the FUSE connection to resume: "
          + String(cString: strerror(code)), errno: code)
    }
    return ResumedConnection(
      fuseDescriptor: fuse, stateDescriptor: state >= 0 ? state : nil,
      initRequest: Array(request.prefix(length)))
  }()
}
