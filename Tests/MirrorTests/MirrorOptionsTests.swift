import Testing

@testable import mountsup_mirror

@Suite("mountsup-mirror -o options")
struct MirrorOptionsTests {
  @Test("defaults")
  func defaults() throws {
    let options = try MirrorOptions(parsing: [])
    #expect(options == MirrorOptions())
    #expect(!options.readOnly && !options.allowOther)
    #expect(options.attributeTimeout == 1 && options.entryTimeout == 1)
    #expect(options.negativeTimeout == 0)
    #expect(options.maxThreads == 10)
    #expect(options.passthrough == .auto)
  }

  @Test("several lists, later values win, kernel flags pass through")
  func parsing() throws {
    let options = try MirrorOptions(parsing: [
      "ro,allow_other,attr_timeout=2.5", "entry_timeout=0,negative_timeout=7,rw,ro",
      "fsname=photos\\,2024,max_threads=4,noatime,nosuid,default_permissions",
      "passthrough=on,passthrough=off",
    ])
    #expect(options.readOnly)
    #expect(options.allowOther)
    #expect(options.attributeTimeout == 2.5)
    #expect(options.entryTimeout == 0)
    #expect(options.negativeTimeout == 7)
    #expect(options.fsName == "photos,2024")
    #expect(options.maxThreads == 4)
    #expect(options.kernelFlags == ["noatime", "nosuid"])
    #expect(options.passthrough == .off)
    #expect(try MirrorOptions(parsing: ["passthrough=on"]).passthrough == .on)
  }

  @Test(
    "bad options are rejected with a reason",
    arguments: [
      ("bogus", "unknown mount option 'bogus'"),
      ("attr_timeout=soon", "attr_timeout must be a number of seconds, not 'soon'"),
      ("entry_timeout=-1", "entry_timeout must be a number of seconds, not '-1'"),
      ("max_threads=0", "max_threads must be a number from 1 to 1024, not '0'"),
      ("fsname=", "unknown mount option 'fsname='"),
      ("ro=1", "unknown mount option 'ro=1'"),
      ("subtype=x", "unknown mount option 'subtype=x'"),
      ("passthrough=yes", "passthrough must be auto, on or off, not 'yes'"),
      ("passthrough", "unknown mount option 'passthrough'"),
    ])
  func rejected(option: String, reason: String) {
    #expect(throws: MirrorOptions.Invalid.self) { try MirrorOptions(parsing: [option]) }
    do {
      _ = try MirrorOptions(parsing: [option])
    } catch {
      #expect(error.description == reason)
    }
  }
}
