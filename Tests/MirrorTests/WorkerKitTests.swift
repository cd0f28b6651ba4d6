import CMountWorkerKitSupport
import Foundation
import Glibc
import MountWorkerKit
import Synchronization
import Testing

/// The kit on its own: a filesystem written against its API, mounted inside the test process.
@Suite("MountWorkerKit")
struct WorkerKitTests {
  /// A socketpair standing in for the supervisor: `worker` goes to the kit, `supervisor` is read.
  final class Channel {
    let worker: Int32
    let supervisor: Int32

    init() throws {
      var pair: [Int32] = [-1, -1]
      let type = Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
      guard socketpair(AF_UNIX, type, 0, &pair) == 0 else { throw HarnessError("socketpair") }
      worker = pair[1]
      supervisor = pair[0]
    }

    deinit {
      close(worker)
      close(supervisor)
    }

    var notifier: SupervisorNotifier { SupervisorNotifier(descriptor: worker) }

    func next(timeout: Double = 10) -> String? {
      var pollFD = pollfd(fd: supervisor, events: Int16(POLLIN), revents: 0)
      guard poll(&pollFD, 1, Int32(timeout * 1000)) > 0 else { return nil }
      var buffer = [UInt8](repeating: 0, count: 4096)
      let count = recv(supervisor, &buffer, buffer.count, 0)
      return count > 0 ? String(decoding: buffer[..<count], as: UTF8.self) : nil
    }
  }

  @Test("a worker serves, reports READY then STOPPING, and returns after an unmount")
  func inProcessWorker() throws {
    let scratch = try Scratch()
    defer { scratch.remove() }
    let mountpoint = try scratch.directory("mnt")
    let channel = try Channel()
    let worker = FUSEWorker(
      fileSystem: NotesFileSystem(notes: ["hello": "Hello, world!\n"]), mountpoint: mountpoint,
      options: FUSEMountOptions(fsName: "notes", subtype: "notes"),
      configuration: FUSEWorkerConfiguration(handlesSignals: false, notifier: channel.notifier))
    let outcome = Mutex<Result<Void, FUSEWorkerError>?>(nil)
    let thread = Thread {
      let result = Result { () throws(FUSEWorkerError) in try worker.run() }
      outcome.withLock { $0 = result }
    }
    thread.start()
    defer {
      detachMount(mountpoint)
      _ = waitUntil(timeout: 10) { outcome.withLock { $0 != nil } }
    }

    #expect(channel.next() == "READY=1")
    #expect(fuseMount(at: mountpoint)?.type == "fuse.notes")
    #expect(fuseMount(at: mountpoint)?.source == "notes")
    #expect(try readFile(mountpoint + "/hello") == "Hello, world!\n")
    try writeFile(mountpoint + "/second", "two")
    #expect(try readFile(mountpoint + "/second") == "two")
    #expect(truncate(mountpoint + "/second", 1) == 0)
    #expect(try readFile(mountpoint + "/second") == "t")
    #expect(try listDirectory(mountpoint).sorted() == ["hello", "second"])
    #expect(unlink(mountpoint + "/second") == 0)
    #expect(throws: ErrnoError(ENOENT)) { try lstatOf(mountpoint + "/second") }
    // Operations the filesystem leaves out answer as libfuse would.
    #expect(errnoOf { Int(mkdir(mountpoint + "/dir", 0o755)) } == ENOSYS)
    var statistics = statvfs()
    #expect(statvfs(mountpoint, &statistics) == 0)
    #expect(statistics.f_namemax == 255)
    #expect(errnoOf { Int(setxattr(mountpoint + "/hello", "user.x", "y", 1, 0)) } == EOPNOTSUPP)

    #expect(umount2(mountpoint, 0) == 0)
    #expect(waitUntil(timeout: 10) { outcome.withLock { $0 != nil } })
    #expect(throws: Never.self) { try outcome.withLock { $0 }?.get() }
    #expect(channel.next() == "STOPPING=1")
  }

  @Test("a worker that cannot mount throws, and reports ERROR and ERRNO")
  func mountFailure() throws {
    let scratch = try Scratch()
    defer { scratch.remove() }
    let channel = try Channel()
    let missing = scratch.path("missing")
    let worker = FUSEWorker(
      fileSystem: NotesFileSystem(notes: [:]), mountpoint: missing,
      configuration: FUSEWorkerConfiguration(handlesSignals: false, notifier: channel.notifier))
    #expect(throws: FUSEWorkerError.self) { try worker.run() }
    do {
      try worker.run()
    } catch {
      #expect(error.errno == ENOENT)
      #expect(error.message == "mountpoint \(missing): No such file or directory")
    }
    #expect(channel.next() == "ERROR=mountpoint \(missing): No such file or directory\nERRNO=2")
  }

  @Test("libfuse's own complaint about an option becomes the ERROR text")
  func libfuseRejectsOption() throws {
    let scratch = try Scratch()
    defer { scratch.remove() }
    let channel = try Channel()
    let worker = FUSEWorker(
      fileSystem: NotesFileSystem(notes: [:]), mountpoint: try scratch.directory("mnt"),
      options: FUSEMountOptions(additional: ["no_such_option"]),
      configuration: FUSEWorkerConfiguration(handlesSignals: false, notifier: channel.notifier))
    #expect(throws: FUSEWorkerError.self) { try worker.run() }
    let message = channel.next() ?? ""
    #expect(message.hasPrefix("ERROR=unknown option(s): `-o no_such_option'"))
    #expect(message.hasSuffix("\nERRNO=22"))
    #expect(fuseMount(at: scratch.path("mnt")) == nil)
  }

  @Test("notifier messages: one datagram each, newlines in values flattened")
  func notifierMessages() throws {
    let channel = try Channel()
    let notifier = channel.notifier
    #expect(notifier.isActive)
    notifier.status("copying\nstill copying")
    notifier.failure("gone", errno: nil)
    notifier.send(["READY": "1", "STATUS": "up"])
    #expect(channel.next() == "STATUS=copying still copying")
    #expect(channel.next() == "ERROR=gone")
    #expect(channel.next() == "READY=1\nSTATUS=up")
    // Without a supervisor the same calls do nothing.
    let silent = SupervisorNotifier(descriptor: nil)
    #expect(!silent.isActive)
    silent.ready()
    #expect(!SupervisorNotifier(descriptor: 987_654).isActive)
  }

  @Test("mount options: defaults, flags, and escaping of commas in values")
  func mountOptions() {
    #expect(FUSEMountOptions().optionString == "rw")
    let options = FUSEMountOptions(
      fsName: "mirror:/srv/a,b\\c", subtype: "mirror", readOnly: true, allowOther: true,
      defaultPermissions: true, additional: ["noatime"])
    #expect(
      options.optionString
        == "ro,fsname=mirror:/srv/a\\,b\\\\c,subtype=mirror,allow_other,default_permissions,noatime"
    )
  }

  @Test("names and errors")
  func smallTypes() {
    "..".withCString { #expect(FUSEName($0).isDotOrDotDot) }
    ".".withCString { #expect(FUSEName($0).isDotOrDotDot) }
    "...".withCString { #expect(!FUSEName($0).isDotOrDotDot) }
    ".a".withCString { #expect(!FUSEName($0).isDotOrDotDot) }
    #expect(FUSEError.noEntry.description == "No such file or directory (errno 2)")
    errno = 0
    #expect(FUSEError.current == .inputOutput)
    errno = EXDEV
    #expect(FUSEError.current.errno == EXDEV)
  }
}
