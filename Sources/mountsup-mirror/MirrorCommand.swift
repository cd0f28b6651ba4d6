import ArgumentParser
import CMountWorkerKitSupport
import Glibc
import MountWorkerKit

@main
struct MirrorCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "mountsup-mirror",
    abstract: "Mirror the directory SOURCE at MOUNTPOINT through FUSE.",
    discussion: """
      Runs in the foreground until MOUNTPOINT is unmounted or it gets SIGTERM/SIGINT, then \
      unmounts and exits 0; exits 1 if it cannot start. Started by mountsupd it reports \
      readiness on MOUNTSUP_NOTIFY_FD.

      \(MirrorOptions.help)
      """)

  @Argument(help: "The directory to mirror.")
  var source: String

  @Argument(help: "Where to mount the mirror (an existing directory).")
  var mountpoint: String

  @Option(
    name: .customShort("o"), help: ArgumentHelp("Mount options (see below).", valueName: "options"))
  var optionLists: [String] = []

  @Flag(
    name: .customShort("f"), help: "Accepted and ignored: the mirror always runs in the foreground."
  )
  var foreground = false

  func validate() throws {
    do {
      _ = try MirrorOptions(parsing: optionLists)
    } catch {
      throw ValidationError(error.description)
    }
  }

  /// Parses like ``ParsableCommand/main()`` but also tells a supervisor why bad arguments stop
  /// the worker, since its stderr may be the only other place that says so.
  static func main() {
    do {
      try parse().start()
    } catch {
      if exitCode(for: error) != .success {
        SupervisorNotifier.shared.failure(message(for: error), errno: EINVAL)
      }
      exit(withError: error)
    }
  }

  func start() throws -> Never {
    let options = try MirrorOptions(parsing: optionLists)
    guard let resolved = realpath(source, nil) else {
      let code = errno
      FUSEWorker.exit(failure: "source \(source): \(String(cString: strerror(code)))", errno: code)
    }
    let sourcePath = String(cString: resolved)
    free(resolved)

    let rootDescriptor = open(sourcePath, MWK_O_PATH | O_DIRECTORY | O_CLOEXEC)
    var rootAttributes = stat()
    guard rootDescriptor >= 0,
      fstatat(rootDescriptor, "", &rootAttributes, MWK_AT_EMPTY_PATH) == 0
    else {
      let code = errno
      FUSEWorker.exit(
        failure: "source \(sourcePath): \(String(cString: strerror(code)))", errno: code)
    }

    // The kernel already applied the caller's umask to every mode it sends.
    umask(0)
    raiseDescriptorLimit()

    // Node ids and open handles live in the state the supervisor keeps, so that a successor
    // resumes this mount after a crash (handles are reopened by file handle, which takes root).
    let state: MirrorState
    do {
      state = try MirrorState(FUSEPersistentState.attach(size: MirrorState.size))
    } catch {
      FUSEWorker.exit(failure: "cannot keep the mirror's state: \(error)", errno: ENOMEM)
    }
    let fileSystem = MirrorFileSystem(
      root: MirrorNode(descriptor: rootDescriptor, key: SourceKey(rootAttributes), id: .root),
      state: state,
      timeouts: MirrorTimeouts(
        attributes: options.attributeTimeout, entries: options.entryTimeout,
        negativeEntries: options.negativeTimeout),
      passthrough: options.passthrough)
    let worker = FUSEWorker(
      fileSystem: fileSystem, mountpoint: mountpoint,
      options: FUSEMountOptions(
        fsName: options.fsName ?? "mountsup-mirror:\(sourcePath)", subtype: "mountsup-mirror",
        readOnly: options.readOnly, allowOther: options.allowOther, defaultPermissions: true,
        additional: options.kernelFlags),
      configuration: FUSEWorkerConfiguration(
        maxThreads: options.maxThreads, maxIdleThreads: options.maxThreads,
        handsOverConnection: canReopenByHandle(rootDescriptor)))
    worker.runAndExit()
  }

  /// Every file the kernel knows holds one descriptor: lift the soft limit to the hard one,
  /// and as root the hard one to the system's ceiling (`fs.nr_open`).
  private func raiseDescriptorLimit() {
    let resource = Int32(RLIMIT_NOFILE.rawValue)
    var limit = rlimit()
    guard getrlimit(resource, &limit) == 0 else { return }
    if geteuid() == 0, let text = try? readSmallFile("/proc/sys/fs/nr_open"),
      let ceiling = rlim_t(text.filter(\.isNumber)), ceiling > limit.rlim_max
    {
      var raised = rlimit(rlim_cur: ceiling, rlim_max: ceiling)
      if setrlimit(resource, &raised) == 0 { return }
    }
    guard limit.rlim_cur < limit.rlim_max else { return }
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(resource, &limit)
  }
}

/// The first bytes of a small file such as a /proc setting.
private func readSmallFile(_ path: String) throws(FUSEError) -> String {
  let descriptor = open(path, O_RDONLY | O_CLOEXEC)
  guard descriptor >= 0 else { throw .current }
  defer { close(descriptor) }
  var buffer = [UInt8](repeating: 0, count: 64)
  let count = read(descriptor, &buffer, buffer.count)
  guard count >= 0 else { throw .current }
  return String(decoding: buffer[..<count], as: UTF8.self)
}

/// Whether a successor could reopen SOURCE's files by their handles: it takes root, a SOURCE
/// with file handles, and a system that lets `open_by_handle_at` through. Container runtimes
/// (Docker, podman, systemd-nspawn) deny it by default (it was the "shocker" container escape),
/// and so does overlayfs without `nfs_export`. Where it cannot, the mirror does not hand its
/// connection over: a crash is detached and mounted anew, rather than resumed with files that
/// fail to reopen.
func canReopenByHandle(_ root: Int32) -> Bool {
  guard geteuid() == 0 else { return false }
  let capacity = MirrorState.handleCapacity + 8
  return withUnsafeTemporaryAllocation(byteCount: capacity, alignment: 8) { handle in
    guard mwk_handle_of(root, handle.baseAddress, capacity) > 0 else { return false }
    let mount = openat(root, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard mount >= 0 else { return false }
    defer { close(mount) }
    let reopened = mwk_open_by_handle(mount, handle.baseAddress, MWK_O_PATH | O_CLOEXEC)
    guard reopened >= 0 else {
      let message = Array(
        "mountsup-mirror: files cannot be reopened by handle here (\(String(cString: strerror(errno)))): a crash is not resumed\n"
          .utf8)
      _ = write(STDERR_FILENO, message, message.count)
      return false
    }
    close(reopened)
    return true
  }
}
