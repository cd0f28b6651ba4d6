/// The units a duration string may use, two-letter suffixes first so that `ms` is not read as `m`.
private let durationUnits: [(suffix: String, nanoseconds: Int64)] = [
  ("ns", 1),
  ("us", 1_000),
  ("µs", 1_000),
  ("μs", 1_000),
  ("ms", 1_000_000),
  ("s", 1_000_000_000),
  ("m", 60 * 1_000_000_000),
  ("h", 3600 * 1_000_000_000),
]

/// How an operator is told to write a duration; shown whenever one does not parse.
public let durationExamples = #"use e.g. "500ms", "10s", "2m", "1h", "1m30s""#

/// Parses a duration such as `"100ms"`, `"10s"`, `"1m30s"`, `"1.5s"` or `"250us"`: one or more
/// decimal numbers, each followed by a unit (`ns`, `us`/`µs`/`μs`, `ms`, `s`, `m`, `h`), no spaces,
/// no sign.
///
/// Public so that command-line options (timeouts in `mountctl`) accept exactly what the
/// configuration accepts. Returns `nil` for anything else, including values beyond ~292 years.
public func parseDuration(_ text: String) -> Duration? {
  var rest = Substring(text)
  var total: Int64 = 0
  guard !rest.isEmpty else { return nil }
  while !rest.isEmpty {
    let integerDigits = rest.prefix(while: \.isASCIIDigit)
    rest = rest.dropFirst(integerDigits.count)
    var fractionDigits = Substring()
    if rest.first == "." {
      rest = rest.dropFirst()
      fractionDigits = rest.prefix(while: \.isASCIIDigit)
      rest = rest.dropFirst(fractionDigits.count)
    }
    guard !integerDigits.isEmpty || !fractionDigits.isEmpty,
      let unit = durationUnits.first(where: { rest.hasPrefix($0.suffix) })
    else { return nil }
    rest = rest.dropFirst(unit.suffix.count)

    var value: Int64 = 0
    for digit in integerDigits {
      let (scaled, overflow1) = value.multipliedReportingOverflow(by: 10)
      let (sum, overflow2) = scaled.addingReportingOverflow(Int64(digit.asciiDigitValue))
      guard !overflow1, !overflow2 else { return nil }
      value = sum
    }
    let (whole, overflow) = value.multipliedReportingOverflow(by: unit.nanoseconds)
    guard !overflow else { return nil }
    // Each fraction digit is worth a tenth of the previous one; below a nanosecond is dropped.
    var fraction: Int64 = 0
    var place = unit.nanoseconds
    for digit in fractionDigits {
      place /= 10
      fraction += Int64(digit.asciiDigitValue) * place
    }
    let (part, overflow3) = whole.addingReportingOverflow(fraction)
    let (sum, overflow4) = total.addingReportingOverflow(part)
    guard !overflow3, !overflow4 else { return nil }
    total = sum
  }
  return .nanoseconds(total)
}

/// Parses a duration given on a command line: what ``parseDuration(_:)`` accepts, and also a
/// plain number of seconds (`"5"` is 5 s), as an integer duration is in the configuration.
public func parseCommandLineDuration(_ text: String) -> Duration? {
  if !text.isEmpty, text.utf8.allSatisfy({ (48...57).contains($0) }) {
    guard let seconds = Int64(text), seconds <= Int64.max / 1_000_000_000 else { return nil }
    return .seconds(seconds)
  }
  return parseDuration(text)
}

/// Formats a duration the way the configuration writes it, with the largest units that fit:
/// `"100ms"`, `"10s"`, `"1m30s"`, `"1.5s"`, `"1h"`, `"0s"`.
///
/// Public so that status output and logs show durations exactly as an operator would configure
/// them; for a non-negative duration the result parses back with ``parseDuration(_:)`` (to the
/// nanosecond).
public func formatDuration(_ duration: Duration) -> String {
  if duration < .zero { return "-" + formatDuration(.zero - duration) }
  let (seconds, attoseconds) = duration.components
  let nanoseconds = attoseconds / 1_000_000_000
  if seconds == 0 {
    switch nanoseconds {
    case 0: return "0s"
    case ..<1_000: return "\(nanoseconds)ns"
    case ..<1_000_000: return decimal(nanoseconds, scale: 1_000) + "us"
    default: return decimal(nanoseconds, scale: 1_000_000) + "ms"
    }
  }
  var text = ""
  if seconds >= 3600 { text += "\(seconds / 3600)h" }
  if seconds % 3600 >= 60 { text += "\(seconds % 3600 / 60)m" }
  if seconds % 60 != 0 || nanoseconds != 0 {
    text += decimal((seconds % 60) * 1_000_000_000 + nanoseconds, scale: 1_000_000_000) + "s"
  }
  return text
}

/// `value / scale` as a decimal number without trailing zeros, e.g. (1_500, 1_000) → "1.5".
private func decimal(_ value: Int64, scale: Int64) -> String {
  let whole = value / scale
  var remainder = value % scale
  guard remainder != 0 else { return "\(whole)" }
  var digits = ""
  var place = scale / 10
  while remainder != 0 {
    digits += "\(remainder / place)"
    remainder %= place
    place /= 10
  }
  return "\(whole).\(digits)"
}

extension Character {
  fileprivate var isASCIIDigit: Bool { asciiValue.map { (48...57).contains($0) } ?? false }
  fileprivate var asciiDigitValue: Int { Int(asciiValue! - 48) }
}
