import Glibc

/// The user database, asked in one place: `getgrnam_r` and `getgrouplist` grow their buffers
/// until the answer fits.
enum Accounts {
  /// A group's id, or nil if there is no such group.
  static func groupID(of name: String) -> gid_t? {
    var size = 4096
    while size <= 1 << 24 {
      var entry = group()
      var result: UnsafeMutablePointer<group>?
      var buffer = [CChar](repeating: 0, count: size)
      let status = getgrnam_r(name, &entry, &buffer, buffer.count, &result)
      if status == ERANGE {
        size *= 2
        continue
      }
      return status == 0 ? result?.pointee.gr_gid : nil
    }
    return nil
  }

  /// Every group of the user `name`, `primary` included.
  static func groups(ofUser name: UnsafePointer<CChar>, primary: gid_t) -> [gid_t] {
    var count: Int32 = 64
    var groups = [gid_t](repeating: 0, count: Int(count))
    while getgrouplist(name, primary, &groups, &count) < 0 {
      groups = [gid_t](repeating: 0, count: Int(count) * 2)
      count = Int32(groups.count)
    }
    return Array(groups.prefix(Int(count)))
  }

  /// The name, ids, home and groups of a user, or nil if there is none.
  static func user(_ name: String) -> (uid: uid_t, gid: gid_t, home: String)? {
    guard let entry = getpwnam(name) else { return nil }
    return (entry.pointee.pw_uid, entry.pointee.pw_gid, String(cString: entry.pointee.pw_dir))
  }
}
