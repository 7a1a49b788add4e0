//! Users, their numbers, phones and locations.
//!
//! Every write validates its input with the rules in [`crate::directory`] first, so the CLI and
//! the API cannot disagree about what a valid user is. Location membership is kept consistent in
//! the same transaction as the change that affects it: a phone or number that goes away leaves
//! every location, and a location left empty goes away too (its user then falls back to the
//! default "all my phones").

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{conflict_or, now_ms, Page, Paged, Result, Store, StoreError, MAX_PAGE};
use crate::directory::{
    check_members, ExternalNumber, Invalid, Location, LocationPatch, NewLocation, NewPhone,
    NewUser, Phone, PhonePatch, User, UserPatch,
};
use crate::sip::auth::{ha1, Algorithm};

/// What the registrar needs to check a phone's digest response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneCredentials {
    pub phone_id: i64,
    pub user_id: i64,
    pub realm: String,
    pub ha1_md5: String,
    pub ha1_sha256: String,
}

const USER_UNIQUE: &[(&str, &str)] = &[("extension", "extension"), ("fax_number", "fax_number")];
const PHONE_UNIQUE: &[(&str, &str)] = &[("sip_username", "sip_username")];
const LOCATION_UNIQUE: &[(&str, &str)] = &[("name", "name")];

fn limit(page: Page) -> i64 {
    page.limit.clamp(1, MAX_PAGE)
}

/// Splits one extra row off a `limit + 1` query into the next cursor.
fn paged<T>(mut items: Vec<T>, page: Page, id: impl Fn(&T) -> i64) -> Paged<T> {
    let lim = limit(page) as usize;
    let next = if items.len() > lim {
        items.truncate(lim);
        items.last().map(&id)
    } else {
        None
    };
    Paged { items, next }
}

fn user_from_row(row: &AnyRow) -> Result<User> {
    Ok(User {
        id: row.try_get("id")?,
        extension: row.try_get("extension")?,
        display_name: row.try_get("display_name")?,
        email: row.try_get("email")?,
        fax_number: row.try_get("fax_number")?,
        external_numbers: Vec::new(),
        created_at: row.try_get("created_at")?,
    })
}

fn phone_from_row(row: &AnyRow) -> Result<Phone> {
    Ok(Phone {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        sip_username: row.try_get("sip_username")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

fn location_from_row(row: &AnyRow) -> Result<Location> {
    Ok(Location {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        phones: Vec::new(),
        numbers: Vec::new(),
        created_at: row.try_get("created_at")?,
    })
}

const USER_COLS: &str = "id, extension, display_name, email, fax_number, created_at";
const PHONE_COLS: &str = "id, user_id, sip_username, name, created_at";
const LOCATION_COLS: &str = "id, user_id, name, created_at";

/// A fresh phone password: 20 characters from an alphabet without look-alikes, ~115 bits.
pub fn generate_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..20)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

impl Store {
    // ----------------------------------------------------------------------------------------
    // Users

    pub async fn create_user(&self, new: &NewUser) -> Result<User> {
        new.validate()?;
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO users (extension, display_name, email, fax_number, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {USER_COLS}"
        ))
        .bind(&new.extension)
        .bind(&new.display_name)
        .bind(&new.email)
        .bind(&new.fax_number)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| conflict_or(e, USER_UNIQUE))?;
        let mut user = user_from_row(&row)?;
        write_numbers(&mut tx, user.id, &new.external_numbers).await?;
        tx.commit().await?;
        user.external_numbers = new.external_numbers.clone();
        Ok(user)
    }

    pub async fn get_user(&self, id: i64) -> Result<Option<User>> {
        let row = sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut user = user_from_row(&row)?;
        self.attach_numbers(std::slice::from_mut(&mut user)).await?;
        Ok(Some(user))
    }

    pub async fn user_by_extension(&self, extension: &str) -> Result<Option<User>> {
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE extension = $1")
            .bind(extension)
            .fetch_optional(&self.pool)
            .await?;
        match id {
            Some(id) => self.get_user(id).await,
            None => Ok(None),
        }
    }

    pub async fn list_users(&self, page: Page) -> Result<Paged<User>> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLS} FROM users WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(page.after)
        .bind(limit(page) + 1)
        .fetch_all(&self.pool)
        .await?;
        let users = rows.iter().map(user_from_row).collect::<Result<Vec<_>>>()?;
        let mut paged = paged(users, page, |u| u.id);
        self.attach_numbers(&mut paged.items).await?;
        Ok(paged)
    }

    /// Loads external numbers for a run of users ordered by id, in one query over the id range.
    async fn attach_numbers(&self, users: &mut [User]) -> Result<()> {
        let (Some(first), Some(last)) = (users.first(), users.last()) else {
            return Ok(());
        };
        let rows = sqlx::query(
            "SELECT user_id, label, number FROM user_numbers \
             WHERE user_id >= $1 AND user_id <= $2 ORDER BY user_id, position",
        )
        .bind(first.id)
        .bind(last.id)
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let uid: i64 = row.try_get("user_id")?;
            if let Some(u) = users.iter_mut().find(|u| u.id == uid) {
                u.external_numbers.push(ExternalNumber {
                    label: row.try_get("label")?,
                    number: row.try_get("number")?,
                });
            }
        }
        Ok(())
    }

    pub async fn update_user(&self, id: i64, patch: &UserPatch) -> Result<User> {
        patch.validate()?;
        let mut tx = self.begin_write().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        // One statement per present field keeps the SQL static and portable.
        let sets: [(&str, Option<Option<&str>>); 4] = [
            ("extension", patch.extension.as_deref().map(Some)),
            ("display_name", patch.display_name.as_deref().map(Some)),
            ("email", patch.email.as_deref().map(Some)),
            (
                "fax_number",
                patch.fax_number.as_ref().map(|f| f.as_deref()),
            ),
        ];
        for (col, value) in sets {
            if let Some(value) = value {
                sqlx::query(&format!("UPDATE users SET {col} = $1 WHERE id = $2"))
                    .bind(value)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| conflict_or(e, USER_UNIQUE))?;
            }
        }
        if let Some(numbers) = &patch.external_numbers {
            sqlx::query("DELETE FROM user_numbers WHERE user_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            write_numbers(&mut tx, id, numbers).await?;
            // Numbers the user no longer has leave their locations.
            sqlx::query(
                "DELETE FROM location_numbers WHERE location_id IN \
                   (SELECT id FROM locations WHERE user_id = $1) \
                 AND number NOT IN (SELECT number FROM user_numbers WHERE user_id = $1)",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            prune_empty_locations(&mut tx, id).await?;
        }
        tx.commit().await?;
        self.get_user(id).await?.ok_or(StoreError::NotFound)
    }

    /// Deletes a user with their phones, locations and tokens.
    pub async fn delete_user(&self, id: i64) -> Result<()> {
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.credentials.retain(|_, c| c.user_id != id);
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // Phones

    /// Creates a phone for `user_id`; returns it with the password in clear (generated when the
    /// input had none). The password is not stored and cannot be read back.
    pub async fn create_phone(
        &self,
        user_id: i64,
        new: &NewPhone,
        realm: &str,
    ) -> Result<(Phone, String)> {
        new.validate()?;
        let password = new.password.clone().unwrap_or_else(generate_password);
        if self.get_user(user_id).await?.is_none() {
            return Err(StoreError::NotFound);
        }
        let row = sqlx::query(&format!(
            "INSERT INTO phones (user_id, sip_username, name, realm, ha1_md5, ha1_sha256, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {PHONE_COLS}"
        ))
        .bind(user_id)
        .bind(&new.sip_username)
        .bind(&new.name)
        .bind(realm)
        .bind(ha1(Algorithm::Md5, &new.sip_username, realm, &password))
        .bind(ha1(Algorithm::Sha256, &new.sip_username, realm, &password))
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| conflict_or(e, PHONE_UNIQUE))?;
        let phone = phone_from_row(&row)?;
        // Into the credentials cache at once: the registrar answers from it alone.
        self.phone_credentials(&phone.sip_username).await?;
        Ok((phone, password))
    }

    pub async fn get_phone(&self, id: i64) -> Result<Option<Phone>> {
        let row = sqlx::query(&format!("SELECT {PHONE_COLS} FROM phones WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(phone_from_row).transpose()
    }

    pub async fn list_phones(&self, user_id: i64, page: Page) -> Result<Paged<Phone>> {
        let rows = sqlx::query(&format!(
            "SELECT {PHONE_COLS} FROM phones WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(user_id)
        .bind(page.after)
        .bind(limit(page) + 1)
        .fetch_all(&self.pool)
        .await?;
        let phones = rows
            .iter()
            .map(phone_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(paged(phones, page, |p| p.id))
    }

    pub async fn update_phone(&self, id: i64, patch: &PhonePatch, realm: &str) -> Result<Phone> {
        patch.validate()?;
        let mut tx = self.begin_write().await?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT sip_username FROM phones WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(current) = current else {
            return Err(StoreError::NotFound);
        };
        if let Some(name) = &patch.name {
            sqlx::query("UPDATE phones SET name = $1 WHERE id = $2")
                .bind(name)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(password) = &patch.password {
            let username = patch.sip_username.as_deref().unwrap_or(&current);
            sqlx::query(
                "UPDATE phones SET sip_username = $1, realm = $2, ha1_md5 = $3, ha1_sha256 = $4 \
                 WHERE id = $5",
            )
            .bind(username)
            .bind(realm)
            .bind(ha1(Algorithm::Md5, username, realm, password))
            .bind(ha1(Algorithm::Sha256, username, realm, password))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_or(e, PHONE_UNIQUE))?;
        }
        tx.commit().await?;
        self.credentials.retain(|_, c| c.phone_id != id);
        let phone = self.get_phone(id).await?.ok_or(StoreError::NotFound)?;
        self.phone_credentials(&phone.sip_username).await?;
        Ok(phone)
    }

    /// Deletes a phone; it leaves every location, and locations left empty are removed.
    pub async fn delete_phone(&self, id: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let user_id: Option<i64> = sqlx::query_scalar("SELECT user_id FROM phones WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(user_id) = user_id else {
            return Err(StoreError::NotFound);
        };
        // Explicit rather than relying on ON DELETE CASCADE, which SQLite only honours with
        // foreign_keys on; the prune below must see the membership gone.
        sqlx::query("DELETE FROM location_phones WHERE phone_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM phones WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        prune_empty_locations(&mut tx, user_id).await?;
        tx.commit().await?;
        self.credentials.retain(|_, c| c.phone_id != id);
        Ok(())
    }

    /// Fills the credentials cache with every phone, in one query: after a restart every phone
    /// re-registers at once, and a database round trip each would slow exactly that moment.
    pub async fn preload_credentials(&self) -> Result<usize> {
        let rows =
            sqlx::query("SELECT sip_username, id, user_id, realm, ha1_md5, ha1_sha256 FROM phones")
                .fetch_all(&self.pool)
                .await?;
        for row in &rows {
            self.credentials.insert(
                row.try_get("sip_username")?,
                PhoneCredentials {
                    phone_id: row.try_get("id")?,
                    user_id: row.try_get("user_id")?,
                    realm: row.try_get("realm")?,
                    ha1_md5: row.try_get("ha1_md5")?,
                    ha1_sha256: row.try_get("ha1_sha256")?,
                },
            );
        }
        Ok(rows.len())
    }

    /// Credentials from the in-memory cache only (see [`Store::phone_credentials`]).
    pub fn cached_phone_credentials(&self, sip_username: &str) -> Option<PhoneCredentials> {
        self.credentials.get(sip_username).map(|c| c.clone())
    }

    /// Looks `sip_username` up in the background, on `rt`, so that a phone added by another
    /// process (the CLI) is in the cache by its next request. The request at hand does not
    /// wait: it is answered from memory, an unknown name exactly as a wrong password, with no
    /// difference in time or in kind (stateless or not) that would tell a name that exists.
    /// Bounded, since anyone can send names: each name at most once per [`MISS_TTL`], and at
    /// most [`MAX_LOOKUPS`] at a time.
    pub fn prefetch_phone_credentials(&self, sip_username: &str, rt: &tokio::runtime::Handle) {
        if sip_username.is_empty() || !self.misses.admit(sip_username) {
            return;
        }
        let store = self.clone();
        let name = sip_username.to_owned();
        rt.spawn(async move {
            if let Err(e) = store.phone_credentials(&name).await {
                tracing::warn!(error = %e, "credentials lookup failed");
            }
            store.misses.done();
        });
    }

    /// The stored digests for a SIP username, for the registrar and the B2BUA. Found ones are
    /// cached until the phone changes; unknown names are not, so a phone added by another process
    /// (the CLI) is found on its first REGISTER.
    pub async fn phone_credentials(&self, sip_username: &str) -> Result<Option<PhoneCredentials>> {
        let row = sqlx::query(
            "SELECT id, user_id, realm, ha1_md5, ha1_sha256 FROM phones WHERE sip_username = $1",
        )
        .bind(sip_username)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let creds = PhoneCredentials {
            phone_id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            realm: row.try_get("realm")?,
            ha1_md5: row.try_get("ha1_md5")?,
            ha1_sha256: row.try_get("ha1_sha256")?,
        };
        self.credentials
            .insert(sip_username.to_owned(), creds.clone());
        Ok(Some(creds))
    }

    // ----------------------------------------------------------------------------------------
    // Locations

    pub async fn create_location(&self, user_id: i64, new: &NewLocation) -> Result<Location> {
        new.validate()?;
        let mut tx = self.begin_write().await?;
        check_ownership(&mut tx, user_id, &new.phones, &new.numbers).await?;
        let row = sqlx::query(&format!(
            "INSERT INTO locations (user_id, name, created_at) VALUES ($1, $2, $3) \
             RETURNING {LOCATION_COLS}"
        ))
        .bind(user_id)
        .bind(&new.name)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| conflict_or(e, LOCATION_UNIQUE))?;
        let mut loc = location_from_row(&row)?;
        write_members(&mut tx, loc.id, &new.phones, &new.numbers).await?;
        tx.commit().await?;
        loc.phones = new.phones.clone();
        loc.numbers = new.numbers.clone();
        Ok(loc)
    }

    /// A location of `user_id`; another user's location is reported as absent.
    pub async fn get_location(&self, user_id: i64, id: i64) -> Result<Option<Location>> {
        let row = sqlx::query(&format!(
            "SELECT {LOCATION_COLS} FROM locations WHERE id = $1 AND user_id = $2"
        ))
        .bind(id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut loc = location_from_row(&row)?;
        self.attach_members(std::slice::from_mut(&mut loc)).await?;
        Ok(Some(loc))
    }

    pub async fn list_locations(&self, user_id: i64, page: Page) -> Result<Paged<Location>> {
        let rows = sqlx::query(&format!(
            "SELECT {LOCATION_COLS} FROM locations WHERE user_id = $1 AND id > $2 \
             ORDER BY id LIMIT $3"
        ))
        .bind(user_id)
        .bind(page.after)
        .bind(limit(page) + 1)
        .fetch_all(&self.pool)
        .await?;
        let locs = rows
            .iter()
            .map(location_from_row)
            .collect::<Result<Vec<_>>>()?;
        let mut paged = paged(locs, page, |l| l.id);
        self.attach_members(&mut paged.items).await?;
        Ok(paged)
    }

    async fn attach_members(&self, locs: &mut [Location]) -> Result<()> {
        let (Some(first), Some(last)) = (locs.first(), locs.last()) else {
            return Ok(());
        };
        let (lo, hi) = (first.id, last.id);
        let phones = sqlx::query(
            "SELECT location_id, phone_id FROM location_phones \
             WHERE location_id >= $1 AND location_id <= $2 ORDER BY location_id, phone_id",
        )
        .bind(lo)
        .bind(hi)
        .fetch_all(&self.pool)
        .await?;
        for row in phones {
            let lid: i64 = row.try_get("location_id")?;
            if let Some(l) = locs.iter_mut().find(|l| l.id == lid) {
                l.phones.push(row.try_get("phone_id")?);
            }
        }
        let numbers = sqlx::query(
            "SELECT location_id, number FROM location_numbers \
             WHERE location_id >= $1 AND location_id <= $2 ORDER BY location_id, number",
        )
        .bind(lo)
        .bind(hi)
        .fetch_all(&self.pool)
        .await?;
        for row in numbers {
            let lid: i64 = row.try_get("location_id")?;
            if let Some(l) = locs.iter_mut().find(|l| l.id == lid) {
                l.numbers.push(row.try_get("number")?);
            }
        }
        Ok(())
    }

    pub async fn update_location(
        &self,
        user_id: i64,
        id: i64,
        patch: &LocationPatch,
    ) -> Result<Location> {
        patch.validate()?;
        let Some(current) = self.get_location(user_id, id).await? else {
            return Err(StoreError::NotFound);
        };
        let phones = patch.phones.clone().unwrap_or(current.phones);
        let numbers = patch.numbers.clone().unwrap_or(current.numbers);
        check_members(&phones, &numbers)?;
        let mut tx = self.begin_write().await?;
        check_ownership(&mut tx, user_id, &phones, &numbers).await?;
        if let Some(name) = &patch.name {
            sqlx::query("UPDATE locations SET name = $1 WHERE id = $2")
                .bind(name)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| conflict_or(e, LOCATION_UNIQUE))?;
        }
        sqlx::query("DELETE FROM location_phones WHERE location_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM location_numbers WHERE location_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        write_members(&mut tx, id, &phones, &numbers).await?;
        tx.commit().await?;
        self.get_location(user_id, id)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn delete_location(&self, user_id: i64, id: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        // Clear the pointer explicitly: portable even where ON DELETE SET NULL is not enforced.
        sqlx::query(
            "UPDATE users SET current_location_id = NULL WHERE id = $1 AND current_location_id = $2",
        )
        .bind(user_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM locations WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }

    /// The user's chosen location, or `None` for the built-in default (all the user's phones).
    pub async fn current_location(&self, user_id: i64) -> Result<Option<Location>> {
        let id: Option<Option<i64>> =
            sqlx::query_scalar("SELECT current_location_id FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        match id {
            None => Err(StoreError::NotFound),
            Some(None) => Ok(None),
            Some(Some(lid)) => self.get_location(user_id, lid).await,
        }
    }

    /// Selects a location (or the default with `None`). Another user's location is absent.
    pub async fn set_current_location(&self, user_id: i64, location: Option<i64>) -> Result<()> {
        if let Some(lid) = location {
            if self.get_location(user_id, lid).await?.is_none() {
                return Err(Invalid::new("location_id", "no such location").into());
            }
        }
        let done = sqlx::query("UPDATE users SET current_location_id = $1 WHERE id = $2")
            .bind(location)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

async fn write_numbers(
    tx: &mut Transaction<'_, Any>,
    user_id: i64,
    numbers: &[ExternalNumber],
) -> Result<()> {
    for (i, n) in numbers.iter().enumerate() {
        sqlx::query(
            "INSERT INTO user_numbers (user_id, position, label, number) VALUES ($1, $2, $3, $4)",
        )
        .bind(user_id)
        .bind(i as i64)
        .bind(&n.label)
        .bind(&n.number)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn write_members(
    tx: &mut Transaction<'_, Any>,
    location_id: i64,
    phones: &[i64],
    numbers: &[String],
) -> Result<()> {
    for p in phones {
        sqlx::query("INSERT INTO location_phones (location_id, phone_id) VALUES ($1, $2)")
            .bind(location_id)
            .bind(p)
            .execute(&mut **tx)
            .await?;
    }
    for n in numbers {
        sqlx::query("INSERT INTO location_numbers (location_id, number) VALUES ($1, $2)")
            .bind(location_id)
            .bind(n)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Every phone must be the user's own and every number one of the user's external numbers.
/// A phone of another user is reported exactly like a phone that does not exist.
async fn check_ownership(
    tx: &mut Transaction<'_, Any>,
    user_id: i64,
    phones: &[i64],
    numbers: &[String],
) -> Result<()> {
    for (i, p) in phones.iter().enumerate() {
        let owned: Option<i64> =
            sqlx::query_scalar("SELECT id FROM phones WHERE id = $1 AND user_id = $2")
                .bind(p)
                .bind(user_id)
                .fetch_optional(&mut **tx)
                .await?;
        if owned.is_none() {
            return Err(Invalid::new(format!("phones[{i}]"), "is not one of your phones").into());
        }
    }
    for (i, n) in numbers.iter().enumerate() {
        let owned: Option<String> = sqlx::query_scalar(
            "SELECT number FROM user_numbers WHERE user_id = $1 AND number = $2",
        )
        .bind(user_id)
        .bind(n)
        .fetch_optional(&mut **tx)
        .await?;
        if owned.is_none() {
            return Err(Invalid::new(
                format!("numbers[{i}]"),
                "is not one of your external numbers",
            )
            .into());
        }
    }
    Ok(())
}

/// Removes the user's locations that have no member left (and so clears a current location
/// pointing at one).
async fn prune_empty_locations(tx: &mut Transaction<'_, Any>, user_id: i64) -> Result<()> {
    let empty = "SELECT l.id FROM locations l WHERE l.user_id = $1 \
         AND NOT EXISTS (SELECT 1 FROM location_phones p WHERE p.location_id = l.id) \
         AND NOT EXISTS (SELECT 1 FROM location_numbers n WHERE n.location_id = l.id)";
    sqlx::query(&format!(
        "UPDATE users SET current_location_id = NULL WHERE id = $1 AND current_location_id IN ({empty})"
    ))
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    sqlx::query(&format!("DELETE FROM locations WHERE id IN ({empty})"))
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// How long a name not found is not looked up again.
pub const MISS_TTL: std::time::Duration = std::time::Duration::from_secs(2);
/// Background credential lookups under way at most.
pub const MAX_LOOKUPS: usize = 8;
/// Names remembered as looked up, at most (then the oldest are forgotten).
const MAX_MISSES: usize = 4096;

/// Recent cache misses, for [`Store::prefetch_phone_credentials`].
#[derive(Debug, Default)]
pub struct Misses {
    recent: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    in_flight: std::sync::atomic::AtomicUsize,
}

impl Misses {
    /// Whether `name` may be looked up now; if so it counts as under way.
    fn admit(&self, name: &str) -> bool {
        use std::sync::atomic::Ordering;
        let now = std::time::Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent
            .get(name)
            .is_some_and(|t| now.duration_since(*t) < MISS_TTL)
        {
            return false;
        }
        if self.in_flight.load(Ordering::Relaxed) >= MAX_LOOKUPS {
            return false;
        }
        if recent.len() >= MAX_MISSES {
            recent.retain(|_, t| now.duration_since(*t) < MISS_TTL);
            if recent.len() >= MAX_MISSES {
                recent.clear();
            }
        }
        recent.insert(name.to_owned(), now);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn done(&self) {
        self.in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
