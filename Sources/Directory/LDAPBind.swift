#if canImport(Glibc)
import Glibc
#endif
import CLDAP
import CMailSwitchShims
import Routing

/// Opens and binds one libldap handle, the same way for lookups and for the change feed.
enum LDAPBind {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// Blocks the calling queue (never an event loop) for at most the network timeout plus
    /// the operation timeout: the bind is what connects.
    static func open(uri: String, configuration: DirectoryConfiguration) -> Result<OpaquePointer, Failure> {
        let seconds = Int(configuration.timeoutSeconds)
        let micros = Int((configuration.timeoutSeconds - Double(seconds)) * 1_000_000)
        var ld: OpaquePointer?
        guard ldap_initialize(&ld, uri) == LDAP_SUCCESS, let ld else {
            return .failure(Failure(description: "\(uri): invalid URI"))
        }
        mailswitch_ldap_set_int(ld, LDAP_OPT_PROTOCOL_VERSION, LDAP_VERSION3)
        mailswitch_ldap_set_off(ld, LDAP_OPT_REFERRALS)
        mailswitch_ldap_set_timeout(ld, LDAP_OPT_NETWORK_TIMEOUT, seconds, micros)
        mailswitch_ldap_set_timeout(ld, LDAP_OPT_TIMEOUT, seconds, micros)
        let password = configuration.bindPassword ?? ""
        let rc = password.withCString { pw in
            mailswitch_ldap_simple_bind_s(ld, configuration.bindDN, pw, strlen(pw))
        }
        guard rc == LDAP_SUCCESS else {
            ldap_unbind_ext(ld, nil, nil)
            return .failure(Failure(description: "\(uri): bind failed: \(String(cString: ldap_err2string(rc)))"))
        }
        return .success(ld)
    }

    /// The values of `attribute` in an entry, as text.
    static func values(_ handle: OpaquePointer, _ entry: OpaquePointer, _ attribute: String) -> [String] {
        guard let values = ldap_get_values_len(handle, entry, attribute) else { return [] }
        defer { ldap_value_free_len(values) }
        var result: [String] = []
        var index = 0
        while let value = values[index] {
            let bytes = UnsafeRawBufferPointer(start: value.pointee.bv_val, count: Int(value.pointee.bv_len))
            result.append(String(decoding: bytes, as: UTF8.self))
            index += 1
        }
        return result
    }

    static func dn(_ handle: OpaquePointer, _ entry: OpaquePointer) -> String {
        guard let raw = ldap_get_dn(handle, entry) else { return "" }
        defer { ldap_memfree(raw) }
        return String(cString: raw)
    }
}
