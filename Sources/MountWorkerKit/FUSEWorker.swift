import CFuse3
import CMountWorkerKitSupport
import Glibc
import Synchronization

/// Mount options handed to libfuse and the kernel (see mount.fuse3(8)).
public struct FUSEMountOptions: Sendable {
  /// The mount's source as mountinfo, `mount` and `df` show it.
  public var fsName: String?
  /// Makes the filesystem type `fuse.<subtype>`.
  public var subtype: String?
  /// Mount read-only: the kernel refuses every change with `EROFS`.
  public var readOnly: Bool
  /// Let users other than the mounting one use the mount (root may always set it; others need
  /// `user_allow_other` in /etc/fuse.conf).
  public var allowOther: Bool
  /// The kernel checks permissions from the mode bits and ownership the filesystem reports.
  /// Needed for a multi-user mount whose filesystem does not check access itself.
  public var defaultPermissions: Bool
  /// Further options, passed as they are: `noatime`, `nosuid`, `max_read=131072`, ...
  public var additional: [String]

  public init(
    fsName: String? = nil, subtype: String? = nil, readOnly: Bool = false,
    allowOther: Bool = false, defaultPermissions: Bool = false, additional: [String] = []
  ) {
    self.fsName = fsName
    self.subtype = subtype
    self.readOnly = readOnly
    self.allowOther = allowOther
    self.defaultPermissions = defaultPermissions
    self.additional = additional
  }

  /// The comma-separated `-o` argument. Commas and backslashes inside values are escaped the
  /// way libfuse's option parser expects.
  public var optionString: String {
    func escaped(_ value: String) -> String {
      var result = ""
      for character in value {
        if character == "," || character == "\\" { result.append("\\") }
        result.append(character)
      }
      return result
    }
    var options: [String] = [readOnly ? "ro" : "rw"]
    if let fsName { options.append("fsname=" + escaped(fsName)) }
    if let subtype { options.append("subtype=" + escaped(subtype)) }
    if allowOther { options.append("allow_other") }
    if defaultPermissions { options.append("default_permissions") }
    options.append(contentsOf: additional)
    return options.joined(separator: ",")
  }
}

/// How the worker runs its session.
public struct FUSEWorkerConfiguration: Sendable {
  /// Most threads serving requests at once; blocking operations need more than cores.
  public var maxThreads: Int
  /// Threads kept waiting when idle; equal to ``maxThreads`` avoids creating threads under load.
  public var maxIdleThreads: Int
  /// Give each thread its own /dev/fuse descriptor (less contention with many threads).
  public var cloneDescriptor: Bool
  /// Install libfuse's handlers so that SIGTERM, SIGINT and SIGHUP end the session cleanly
  /// (and SIGPIPE is ignored). Turn off only when the host program owns signal handling.
  public var handlesSignals: Bool
  /// Where readiness messages go; by default the supervisor's channel, if any.
  public var notifier: SupervisorNotifier
  /// Hand the FUSE connection (and the ``FUSEPersistentState``, if attached) to the supervisor
  /// when it offers to take it (`MOUNTSUP_HANDOVER=1`), so that a crash of this worker is
  /// resumed by its successor instead of ending the mount.
  /// Turn it on only for a file system whose node ids and handles keep their meaning for a
  /// successor (see docs/worker-kit.md); requests resent after a crash must be safe to repeat.
  public var handsOverConnection: Bool

  public init(
    maxThreads: Int = 10, maxIdleThreads: Int = 10, cloneDescriptor: Bool = false,
    handlesSignals: Bool = true, notifier: SupervisorNotifier = .shared,
    handsOverConnection: Bool = false
  ) {
    self.maxThreads = maxThreads
    self.maxIdleThreads = maxIdleThreads
    self.cloneDescriptor = cloneDescriptor
    self.handlesSignals = handlesSignals
    self.notifier = notifier
    self.handsOverConnection = handsOverConnection
  }
}

/// Why a worker could not run: the text is what the supervisor and the operator see.
public struct FUSEWorkerError: Error, Sendable, CustomStringConvertible {
  public var message: String
  /// The underlying errno, when there is one.
  public var errno: Int32?

  public init(_ message: String, errno: Int32?) {
    self.message = message
    self.errno = errno
  }

  public var description: String { message }
}

/// Mounts a ``FUSEFileSystem`` and serves it in the foreground until it is unmounted or the
/// process gets SIGTERM/SIGINT/SIGHUP, speaking the readiness protocol on the way:
/// `READY=1` from the FUSE `init` request (the mount is in mountinfo by then), `ERROR=`/`ERRNO=`
/// before giving up, `STOPPING=1` when the session ends.
///
/// A worker the supervisor starts with `MOUNTSUP_RESUME=1` does not mount: it serves the live
/// connection its crashed predecessor handed over (see
/// ``FUSEWorkerConfiguration/handsOverConnection``), and the kernel resends the requests the
/// predecessor had read but not answered.
///
/// ```swift
/// let worker = FUSEWorker(fileSystem: MyFS(), mountpoint: "/mnt/x",
///                         options: FUSEMountOptions(fsName: "myfs", subtype: "myfs"))
/// worker.runAndExit()
/// ```
public final class FUSEWorker: Sendable {
  public let fileSystem: any FUSEFileSystem
  public let mountpoint: String
  public let options: FUSEMountOptions
  public let configuration: FUSEWorkerConfiguration

  public init(
    fileSystem: any FUSEFileSystem, mountpoint: String, options: FUSEMountOptions = .init(),
    configuration: FUSEWorkerConfiguration = .init()
  ) {
    self.fileSystem = fileSystem
    self.mountpoint = mountpoint
    self.options = options
    self.configuration = configuration
  }

  /// Mounts, serves until the session ends, unmounts. Returns normally after an unmount or a
  /// termination signal. Throws when the session could not start or failed; the error has
  /// already been written to stderr and sent as `ERROR=`/`ERRNO=` then.
  public func run() throws(FUSEWorkerError) {
    let notifier = configuration.notifier
    do throws(FUSEWorkerError) {
      try serve()
    } catch {
      FUSEWorker.report(error, notifier: notifier)
      throw error
    }
  }

  /// ``run()``, then exits the process: status 0 after a clean end, 1 after a failure.
  public func runAndExit() -> Never {
    do {
      try run()
      Glibc.exit(0)
    } catch {
      Glibc.exit(1)
    }
  }

  /// Reports a failure that happens before the worker runs (bad arguments, a missing source)
  /// to stderr and the supervisor, then exits with status 1.
  public static func exit(
    failure message: String, errno: Int32?, notifier: SupervisorNotifier = .shared
  ) -> Never {
    report(FUSEWorkerError(message, errno: errno), notifier: notifier)
    Glibc.exit(1)
  }

  static func report(_ error: FUSEWorkerError, notifier: SupervisorNotifier) {
    let line = "\(programName): error: \(error.message)\n"
    _ = line.utf8CString.withUnsafeBufferPointer { write(2, $0.baseAddress, $0.count - 1) }
    notifier.failure(error.message, errno: error.errno)
  }

  static var programName: String {
    guard let first = CommandLine.arguments.first, let slash = first.lastIndex(of: "/") else {
      return CommandLine.arguments.first ?? "worker"
    }
    return String(first[first.index(after: slash)...])
  }

  private func serve() throws(FUSEWorkerError) {
    let resumed = ResumedConnection.shared
    if resumed == nil { try checkMountpoint() }
    mwk_capture_fuse_log()
    mwk_clear_fuse_error()

    var arguments = fuse_args(argc: 0, argv: nil, allocated: 0)
    defer { fuse_opt_free_args(&arguments) }
    for argument in [FUSEWorker.programName, "-o", options.optionString] {
      guard fuse_opt_add_arg(&arguments, argument) == 0 else {
        throw FUSEWorkerError("out of memory", errno: ENOMEM)
      }
    }

    // A worker that hands over or resumes keeps its backing ids in the state the supervisor
    // holds (the kit's part of it), whether or not the file system keeps anything there.
    let handsOver = configuration.handsOverConnection && HandoverOffer.isOffered
    let state =
      handsOver || resumed != nil ? try FUSEPersistentState.attach(size: 0) : nil
    let context = SessionContext(
      fileSystem: fileSystem, notifier: configuration.notifier,
      passthrough: Passthrough(state: state))
    var operations = SessionContext.operations
    guard
      let session = fuse_session_new(
        &arguments, &operations, MemoryLayout<fuse_lowlevel_ops>.size,
        Unmanaged.passUnretained(context).toOpaque())
    else {
      throw FUSEWorkerError(
        FUSEWorker.libfuseMessage(or: "invalid mount options '\(options.optionString)'"),
        errno: EINVAL)
    }
    defer { withExtendedLifetime(context) { fuse_session_destroy(session) } }
    context.session = session

    if configuration.handlesSignals {
      // A mask inherited from a thread of the parent (Dispatch threads block most signals)
      // would make the worker deaf to the stop request it promises to honour.
      var stopSignals = sigset_t()
      sigemptyset(&stopSignals)
      for signal in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&stopSignals, signal) }
      pthread_sigmask(SIG_UNBLOCK, &stopSignals, nil)
      guard fuse_set_signal_handlers(session) == 0 else {
        throw FUSEWorkerError("cannot install signal handlers", errno: Glibc.errno)
      }
    }
    defer { if configuration.handlesSignals { fuse_remove_signal_handlers(session) } }

    if let resumed {
      let code = resumed.initRequest.withUnsafeBytes {
        mwk_session_resume(session, resumed.fuseDescriptor, $0.baseAddress, $0.count)
      }
      guard code == 0 else {
        throw FUSEWorkerError(
          "cannot resume the FUSE connection of \(mountpoint): "
            + String(cString: strerror(code)), errno: code)
      }
    } else {
      Glibc.errno = 0
      guard fuse_session_mount(session, mountpoint) == 0 else {
        let code = Glibc.errno
        throw FUSEWorkerError(
          "cannot mount \(mountpoint): "
            + FUSEWorker.libfuseMessage(or: String(cString: strerror(code == 0 ? EIO : code))),
          errno: code == 0 ? EIO : code)
      }
      let code =
        if handsOver, let channel = configuration.notifier.descriptor {
          mwk_session_hand_over(session, channel, state?.descriptor ?? -1)
        } else {
          mwk_session_route(session)
        }
      guard code == 0 else {
        fuse_session_unmount(session)
        throw FUSEWorkerError(
          "cannot route the FUSE connection: " + String(cString: strerror(code)), errno: code)
      }
    }
    context.passthrough.serve(on: fuse_session_fd(session))
    // A resumed session has no mountpoint of its own to unmount: libfuse skips it.
    defer { fuse_session_unmount(session) }

    guard let loopConfiguration = fuse_loop_cfg_create() else {
      throw FUSEWorkerError("out of memory", errno: ENOMEM)
    }
    defer { fuse_loop_cfg_destroy(loopConfiguration) }
    fuse_loop_cfg_set_max_threads(loopConfiguration, UInt32(max(1, configuration.maxThreads)))
    fuse_loop_cfg_set_idle_threads(
      loopConfiguration, UInt32(max(1, configuration.maxIdleThreads)))
    // A clone of the descriptor would be a second device of the connection that the
    // supervisor does not hold; a handed-over connection is served on the one it holds.
    let clones = configuration.cloneDescriptor && !configuration.handsOverConnection
    fuse_loop_cfg_set_clone_fd(loopConfiguration, clones && resumed == nil ? 1 : 0)

    let result = fuse_session_loop_mt(session, loopConfiguration)
    if let refusal = context.refusal { throw refusal }
    context.sendStopping()
    // Positive results are the signal that ended the loop: a requested, clean stop.
    if result < 0 {
      throw FUSEWorkerError(
        "FUSE session failed: " + String(cString: strerror(-result)), errno: -result)
    }
  }

  private func checkMountpoint() throws(FUSEWorkerError) {
    var attributes = stat()
    guard stat(mountpoint, &attributes) == 0 else {
      let code = Glibc.errno
      throw FUSEWorkerError(
        "mountpoint \(mountpoint): " + String(cString: strerror(code)), errno: code)
    }
    guard attributes.st_mode & S_IFMT == S_IFDIR else {
      throw FUSEWorkerError("mountpoint \(mountpoint) is not a directory", errno: ENOTDIR)
    }
  }

  /// libfuse's own last error message without its "fuse: " prefix, or `fallback`.
  private static func libfuseMessage(or fallback: String) -> String {
    var buffer = [UInt8](repeating: 0, count: 512)
    let length = buffer.withUnsafeMutableBufferPointer { bytes in
      bytes.withMemoryRebound(to: CChar.self) { mwk_last_fuse_error($0.baseAddress, $0.count) }
    }
    guard length > 0 else { return fallback }
    let message = String(decoding: buffer.prefix(length), as: UTF8.self)
    return message.hasPrefix("fuse: ") ? String(message.dropFirst(6)) : message
  }
}

/// What the C callbacks reach through the session's userdata pointer.
final class SessionContext: Sendable {
  let fileSystem: any FUSEFileSystem
  let notifier: SupervisorNotifier
  let passthrough: Passthrough
  /// The session, set once before it serves.
  nonisolated(unsafe) var session: OpaquePointer?
  private let stoppingSent = Atomic<Bool>(false)
  private let refused = Mutex<FUSEWorkerError?>(nil)

  init(fileSystem: any FUSEFileSystem, notifier: SupervisorNotifier, passthrough: Passthrough) {
    self.fileSystem = fileSystem
    self.notifier = notifier
    self.passthrough = passthrough
  }

  /// The file system refused the connection in `initialize`: INIT is answered with an error
  /// (every access to the mount fails) and the session ends with `error`.
  func refuse(_ error: FUSEWorkerError) {
    refused.withLock { $0 = error }
    // A worker that never served does not announce a stop, only its error.
    stoppingSent.store(true, ordering: .relaxed)
    mwk_answer_init(0, 1)
    fuse_session_exit(session)
  }

  /// Why the file system refused the connection, if it did.
  var refusal: FUSEWorkerError? { refused.withLock { $0 } }

  /// Sends `STOPPING=1` once, from whichever comes first: the loop's end or `destroy`.
  func sendStopping() {
    if !stoppingSent.exchange(true, ordering: .relaxed) { notifier.stopping() }
  }

  static func of(_ request: fuse_req_t?) -> SessionContext {
    Unmanaged<SessionContext>.fromOpaque(fuse_req_userdata(request)!).takeUnretainedValue()
  }

  static func of(userdata: UnsafeMutableRawPointer?) -> SessionContext {
    Unmanaged<SessionContext>.fromOpaque(userdata!).takeUnretainedValue()
  }
}
