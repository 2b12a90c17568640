//! `$(VAR_NAME)` references in a container's `command`, `args` and `env[].value`, expanded
//! the way Kubernetes does (its `third_party/forked/golang/expansion`):
//!
//! * `$(NAME)` becomes the variable's value when `NAME` is defined, and stays as written
//!   (`$(NAME)`) when it is not;
//! * `$$` is an escaped `$`: `$$(NAME)` gives the literal `$(NAME)`;
//! * any other `$` (`$NAME`, a trailing `$`, an unterminated `$(`) stays as it is.
//!
//! Expansion is single-pass: a value that itself contains `$(...)` is not expanded again.
//! One deliberate difference: Go converts the byte after a lone `$` to a rune, which mangles
//! a multi-byte UTF-8 character there; here bytes are copied unchanged.

/// `input` with every `$(NAME)` defined in `env` replaced by its value (the last
/// definition wins, as in the container's environment).
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let lookup = |name: &str| env.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let bytes = input.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' || i + 1 >= bytes.len() {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes[i + 1] {
            b'$' => {
                out.push(b'$');
                i += 2;
            }
            b'(' => match bytes[i + 2..].iter().position(|b| *b == b')') {
                Some(len) => {
                    let name = &input[i + 2..i + 2 + len];
                    match lookup(name) {
                        Some(value) => out.extend_from_slice(value.as_bytes()),
                        None => out.extend_from_slice(&bytes[i..i + 3 + len]),
                    }
                    i += 3 + len;
                }
                // Unterminated: keep `$(` and go on after it.
                None => {
                    out.extend_from_slice(b"$(");
                    i += 2;
                }
            },
            _ => {
                out.push(b'$');
                i += 1;
            }
        }
    }
    // Only ASCII bytes were inserted or removed, at ASCII positions.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(String, String)> {
        vec![
            ("VAR_A".into(), "A".into()),
            ("VAR_B".into(), "B".into()),
            ("VAR_C".into(), "C".into()),
            ("VAR_REF".into(), "$(VAR_A)".into()),
            ("VAR_EMPTY".into(), String::new()),
            ("VAR_A".into(), "A2".into()),
        ]
    }

    /// The cases of Kubernetes' own expansion tests (expand_test.go), plus ours.
    #[test]
    fn expands_like_kubernetes() {
        let env = env();
        let x = |input: &str| expand(input, &env);
        let cases = [
            ("$(VAR_B)", "B"),
            ("___$(VAR_B)___", "___B___"),
            ("$(VAR_B)$(VAR_C)", "BC"),
            ("$(VAR_B)-$(VAR_C)", "B-C"),
            ("$(VAR_EMPTY)", ""),
            ("$(VAR_REF)", "$(VAR_A)"),
            // Undefined names stay as written.
            ("$(VAR_DOES_NOT_EXIST)", "$(VAR_DOES_NOT_EXIST)"),
            ("$()", "$()"),
            // Escapes.
            ("$$(VAR_B)", "$(VAR_B)"),
            ("$$$(VAR_B)", "$B"),
            ("$$$$(VAR_B)", "$$(VAR_B)"),
            ("$$", "$"),
            ("$$$", "$$"),
            ("foo$$bar", "foo$bar"),
            // Not references.
            ("$VAR_B", "$VAR_B"),
            ("$", "$"),
            ("foo$", "foo$"),
            ("$(VAR_B", "$(VAR_B"),
            ("$(", "$("),
            ("$($(VAR_B)", "$($(VAR_B)"),
            ("$(VAR_B$(VAR_C)", "$(VAR_B$(VAR_C)"),
            ("${VAR_B}", "${VAR_B}"),
            ("", ""),
            ("no refs", "no refs"),
            ("$(VAR_B)$", "B$"),
            ("é$é$(VAR_B)é", "é$éBé"),
            // Later definitions win.
            ("$(VAR_A)", "A2"),
        ];
        for (input, want) in cases {
            assert_eq!(x(input), want, "expanding {input:?}");
        }
    }
}
