//! Passwords, hashed with argon2id (its default parameters: 19 MiB, two
//! passes), kept as PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$…`).

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use rand::RngCore as _;

/// Shortest password accepted.
pub const MIN_LEN: usize = 10;

/// Whether `password` may be `user`'s: long enough and not the name.
pub fn acceptable(user: &str, password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_LEN {
        return Err(format!("a password needs at least {MIN_LEN} characters"));
    }
    if password.eq_ignore_ascii_case(user) {
        return Err("the password must not be the user's name".into());
    }
    Ok(())
}

/// `password` hashed with a fresh random salt.
pub fn hash(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` is the one `phc` was made from (a malformed `phc`
/// matches nothing).
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A hash of no password anyone has, verified against when a user does
/// not exist, so that a wrong name takes as long as a wrong password.
pub fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash("no one's password, ever").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_and_nothing_else() {
        let h = hash("correct horse battery").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("correct horse battery", &h));
        assert!(!verify("correct horse batterY", &h));
        assert!(!verify("correct horse battery", "not a hash"));
        assert_ne!(h, hash("correct horse battery").expect("hash"), "salted");
    }

    #[test]
    fn short_passwords_and_the_users_name_are_refused() {
        assert!(acceptable("ada", "short").is_err());
        assert!(acceptable("lovelace-ada", "Lovelace-Ada").is_err());
        assert!(acceptable("ada", "a long enough one").is_ok());
    }
}
