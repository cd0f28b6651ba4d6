import CLinuxSupport
import Foundation
import Glibc
import MountSupTestSupport
import Testing

/// The service manager's fd store as systemd keeps it, for a test without systemd: it takes the
/// descriptors sent with `FDSTORE=1` and `FDNAME=`, lets go of those named in `FDSTOREREMOVE=1`,
/// and gives them back for the restart.
final class FakeDescriptorStore {
  let path: String
  private let fd: Int32
  private(set) var stored: [String: Int32] = [:]

  init(in sandbox: Sandbox) throws {
    path = sandbox.path + "/notify.sock"
    fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
      let bytes = Array(path.utf8)
      raw.copyBytes(from: bytes)
      raw[bytes.count] = 0
    }
    let bound = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
      }
    }
    guard fd >= 0, bound == 0 else { throw TestFailure("cannot bind \(path)") }
  }

  deinit {
    close(fd)
    for descriptor in stored.values { close(descriptor) }
  }

  /// Takes every message that waits.
  func receive() {
    var buffer = [UInt8](repeating: 0, count: 4096)
    var passed: [Int32] = [-1, -1]
    while true {
      var count: Int32 = 0
      let got = mountsup_receive_with_fds(
        fd, &buffer, buffer.count, &passed, Int32(passed.count), &count)
      guard got > 0 else { return }
      let text = String(decoding: buffer.prefix(got), as: UTF8.self)
      var fields: [String: String] = [:]
      for line in text.split(separator: "\n") {
        guard let equals = line.firstIndex(of: "=") else { continue }
        fields[String(line[..<equals])] = String(line[line.index(after: equals)...])
      }
      let received = Array(passed.prefix(Int(count)))
      if fields["FDSTORE"] == "1", let name = fields["FDNAME"], let first = received.first {
        // Kept high, so that passing them on to fds 3, 4, … never overwrites one of them.
        stored[name] = fcntl(first, F_DUPFD_CLOEXEC, 200)
        for descriptor in received { close(descriptor) }
      } else {
        for descriptor in received { close(descriptor) }
        if fields["FDSTOREREMOVE"] == "1", let name = fields["FDNAME"],
          let descriptor = stored.removeValue(forKey: name)
        {
          close(descriptor)
        }
      }
    }
  }
}

@Suite struct FdStoreTests {
  @Test("a killed mountsupd's held connection comes back from the fd store: the mount stays")
  func heldConnectionSurvivesTheSupervisor() async throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    try sandbox.write("source/greeting", "hello\n")
    let mountpoint = sandbox.path + "/mnt/mirror"
    let config = try sandbox.writeConfig(
      mountSection(
        "mirror", at: mountpoint,
        command: [binDirectory + "/mountsup-mirror", sandbox.path + "/source", "{mountpoint}"],
        ["restart_delay": "\"0s\""]))
    let store = try FakeDescriptorStore(in: sandbox)
    let first = try Daemon(
      config: config, sandbox: sandbox,
      environment: ["NOTIFY_SOCKET": store.path, "FDSTORE": "16"])
    defer { first.stop() }
    #expect(
      eventually {
        store.receive()
        return Set(store.stored.keys) == ["fuse.mirror", "state.mirror", "init.mirror"]
      }, "stored: \(store.stored.keys); log:\n\(first.log)")
    let mountID = try #require(fuseMount(at: mountpoint)?.id)
    let held = try FileHandle(forReadingFrom: URL(fileURLWithPath: mountpoint + "/greeting"))
    defer { try? held.close() }

    first.signal(SIGKILL)
    _ = first.exitCode(within: .seconds(10))
    // What systemd does at the restart: the stored descriptors as fds 3, 4, 5 with their names.
    let names = store.stored.keys.sorted()
    let second = try Daemon(
      config: config, sandbox: sandbox,
      launcher: ["/bin/sh", "-c", "LISTEN_PID=$$ exec \"$0\" \"$@\""],
      passing: names.map { store.stored[$0]! },
      environment: [
        "NOTIFY_SOCKET": store.path, "FDSTORE": "16", "LISTEN_FDS": String(names.count),
        "LISTEN_FDNAMES": names.joined(separator: ":"),
      ])
    defer { second.stop() }
    #expect(
      eventually { second.log.contains("resumed: the successor serves the FUSE connection") },
      "log:\n\(second.log)")
    #expect(fuseMount(at: mountpoint)?.id == mountID, "the same mount, never detached")
    #expect(try held.readToEnd() == Data("hello\n".utf8), "a file open across the crash reads")
    #expect(readFile(mountpoint + "/greeting") == "hello\n")
    #expect(second.log.contains("resuming the FUSE connection an earlier mountsupd held"))
  }
}
