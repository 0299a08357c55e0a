//! Tokens: whether a given token is one of a role's, compared in constant time (both
//! listeners check them this way).

/// Whether `given` is one of `tokens`, compared in constant time (every token is compared).
pub(crate) fn one_of(tokens: &[String], given: Option<&str>) -> bool {
    let given = given.unwrap_or("").as_bytes();
    tokens.iter().fold(false, |ok, t| {
        ok | constant_time_eq::constant_time_eq(t.as_bytes(), given)
    })
}
