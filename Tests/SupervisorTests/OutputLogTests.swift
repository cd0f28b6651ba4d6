import MountCore
import Testing

@testable import MountRuntime

@Suite("worker output: lines, the cut of long lines, the rate limit")
struct OutputLogTests {
  /// Feeds `chunks` through a splitter, as separate reads, and returns the lines.
  func split(_ chunks: [String]) -> [String] {
    var splitter = LineSplitter()
    var lines: [String] = []
    for chunk in chunks {
      Array(chunk.utf8).withUnsafeBytes {
        splitter.split($0, wanted: { _ in true }, line: { lines.append($0) })
      }
    }
    splitter.finish(wanted: { _ in true }, line: { lines.append($0) })
    return lines
  }

  @Test("lines across reads, and an unfinished last line at the end")
  func linesAcrossReads() {
    #expect(split(["one\ntw", "o\nthr", "ee"]) == ["one", "two", "three"])
  }

  @Test("a line longer than the limit is cut once, however the reads split it")
  func longLinesAreCutOnce() {
    let long = String(repeating: "x", count: LineSplitter.maximumLineLength * 3)
    let whole = split([long + "\nnext\n"])
    let pieces = split(
      [String(long.prefix(10_000)), String(long.dropFirst(10_000)) + "\n", "next\n"])
    for lines in [whole, pieces] {
      #expect(lines.count == 2)
      #expect(lines.first?.utf8.count == LineSplitter.maximumLineLength)
      #expect(lines.last == "next")
    }
  }

  @Test("beyond the burst, lines are counted, and the count is said once")
  func rateLimit() {
    var log = OutputLog()
    let start = MonotonicInstant(nanoseconds: 1_000_000_000)
    var admitted = 0
    for _ in 0..<(OutputLog.rateBurst + 5) where log.admit(now: start) { admitted += 1 }
    #expect(admitted == OutputLog.rateBurst)
    let marker = log.takeDroppedMarker()
    #expect(marker == "[5 lines dropped]")
    let again = log.takeDroppedMarker()
    #expect(again == nil)
    let admittedLater = log.admit(now: start + OutputLog.rateInterval)
    #expect(admittedLater, "a new interval admits again")
  }

  @Test("long lines meet the byte limit first")
  func byteLimit() {
    var log = OutputLog()
    let start = MonotonicInstant(nanoseconds: 1_000_000_000)
    let length = 16 * 1024
    var admitted = 0
    for _ in 0..<1000 where log.admit(now: start, length: length) { admitted += 1 }
    #expect(admitted == OutputLog.rateBytes / length)
  }

  @Test("the last 200 lines are kept, oldest first")
  func keepsTheTail() {
    var log = OutputLog()
    for index in 0..<250 { log.append("line \(index)") }
    #expect(log.lines.count == OutputLog.capacity)
    #expect(log.lines.first == "line 50" && log.lines.last == "line 249")
    #expect(log.tail(2) == ["line 248", "line 249"])
  }
}
