import FoundationEssentials
import MountControl
import Testing

/// The control protocol's lines: compact JSON, keys sorted, one line per message, read back by
/// Foundation's decoder as the same value.
@Suite struct ControlLineTests {
  struct Sample: Codable, Equatable {
    var zebra: String
    var apple: Int
    var middle: [Double]
    var nested: [String: Int8]
    var optional: UInt16?
    var flag: Bool
    var small: Float
  }

  @Test func keysAreSortedAndTheLineIsCompact() throws {
    let line = ControlProtocol.encodeLine(
      Sample(
        zebra: "z", apple: -3, middle: [1.5, 0, -2e-7], nested: ["b": 2, "a": -1], optional: nil,
        flag: true, small: 0.5))
    #expect(
      String(decoding: line, as: UTF8.self)
        == #"{"apple":-3,"flag":true,"middle":[1.5,0.0,-2e-07],"nested":{"a":-1,"b":2},"small":0.5,"zebra":"z"}"#
        + "\n")
  }

  @Test func stringsAreEscapedAndComeBackTheSame() throws {
    let text = "quote \" backslash \\ slash / tab \t newline \n bell \u{7} ü ✓ 🙂"
    let line = ControlProtocol.encodeLine(["text": text])
    #expect(!line.dropLast().contains(UInt8(ascii: "\n")), "a message is one line")
    #expect(String(decoding: line, as: UTF8.self).contains(#"\u0007"#))
    let back = try ControlProtocol.decode([String: String].self, from: line.dropLast())
    #expect(back == ["text": text])
  }

  @Test func statusComesBackTheSame() throws {
    let status = MountStatus(
      name: "photos", state: "ready", detail: "ready for 5s", pid: 42, uptimeSeconds: 5.25,
      restarts: 1, mountpoint: "/mnt/photos", required: true, stoppedByOperator: false,
      lastError: "exited with status 1", lastErrorOutput: ["boom"], workerStatus: nil, hangs: 0,
      resumes: 2, lastResumeGapMilliseconds: 16.5, holdsConnection: true)
    let line = ControlProtocol.encodeLine(status)
    #expect(try ControlProtocol.decode(MountStatus.self, from: line.dropLast()) == status)
  }
}
