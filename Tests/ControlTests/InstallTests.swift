import Foundation
import Glibc
import MountSupTestSupport
import Testing

/// The source tree, from this file's place in it.
private let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
  .deletingLastPathComponent().deletingLastPathComponent().path

@Suite("make install and the documentation of the worker examples")
struct InstallTests {
  private var examples: [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: repository + "/etc/mountsup/mounts.d"))
      ?? []).filter { $0.hasSuffix(".toml") }.sorted()
  }

  @Test("the drop-in examples are installed disabled, and uninstalled when unchanged")
  func examplesInstalledDisabled() async throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    #expect(examples.contains("s3fs.toml") && examples.count >= 6, "\(examples)")
    let stage = sandbox.path + "/stage"
    // Only the two binaries every ControlTests run builds; no man pages (MD2MAN empty).
    let variables = [
      "DESTDIR=\(stage)", "BUILDDIR=\(binDirectory)", "BINARIES=mountsupd mountctl", "MD2MAN=",
    ]
    let install = try Spawned(
      ["/usr/bin/make", "-s", "-C", repository, "install-only"] + variables,
      outputPath: sandbox.path + "/install.out", errorPath: sandbox.path + "/install.err")
    #expect(try await install.wait(timeout: .seconds(120)) == 0, "\(install.errors)")

    let dropIns = stage + "/etc/mountsup/mounts.d"
    let installed = try FileManager.default.contentsOfDirectory(atPath: dropIns).sorted()
    #expect(installed == examples.map { $0 + ".example" }, "\(installed)")
    for example in examples {
      #expect(
        readFile(dropIns + "/" + example + ".example")
          == readFile(repository + "/etc/mountsup/mounts.d/" + example))
    }
    #expect(readFile(stage + "/etc/mountsup/mounts.toml") != nil)

    // A drop-in of the operator's own survives the uninstall; the unchanged examples do not.
    try "# mine\n".write(toFile: dropIns + "/mine.toml", atomically: true, encoding: .utf8)
    let uninstall = try Spawned(
      ["/usr/bin/make", "-s", "-C", repository, "uninstall"] + variables,
      outputPath: sandbox.path + "/uninstall.out", errorPath: sandbox.path + "/uninstall.err")
    #expect(try await uninstall.wait(timeout: .seconds(120)) == 0, "\(uninstall.errors)")
    #expect(try FileManager.default.contentsOfDirectory(atPath: dropIns) == ["mine.toml"])
  }

  @Test("mounts.toml(5), the worker protocol and the s3fs drop-in agree: s3fs takes -f")
  func s3fsForegroundFlag() throws {
    let dropIn = try #require(readFile(repository + "/etc/mountsup/mounts.d/s3fs.toml"))
    #expect(dropIn.contains(#""{mountpoint}", "-f""#) && dropIn.contains("## Foreground: -f."))
    // Lines are wrapped: compare with runs of white space made one space.
    func flat(_ document: String) throws -> String {
      let text = try #require(readFile(repository + "/" + document))
      return text.split(whereSeparator: \.isWhitespace).joined(separator: " ")
    }
    for document in ["docs/mounts.toml.5.md", "docs/worker-protocol.md", "README.md"] {
      let text = try flat(document)
      #expect(!text.contains("--foreground** for s3fs"), "\(document)")
      #expect(!text.contains("`--foreground` to s3fs"), "\(document)")
    }
    #expect(try flat("docs/mounts.toml.5.md").contains("(**-f** for libfuse programs and s3fs,"))
    #expect(try flat("docs/worker-protocol.md").contains("pass `-f` to libfuse programs and s3fs,"))
    #expect(try flat("README.md").contains("| sshfs, s3fs | `-f` |"))
  }
}
