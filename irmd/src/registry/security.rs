//! Secure-flow configuration per name (`irm name create/destroy`): owned by
//! the uid that set it (a name already registered or bound belongs to its
//! owner); only the owner or root changes it. irmd keeps the paths and hands
//! them to the library with each flow of the name in a process of the owner
//! (or of anyone, when root set it); it never reads the keys.

use super::{Cred, Registry};
use irm::proto::{check_name, NameSecurity, Reply};
use irm::Error;
use log::info;

impl Registry {
    pub(super) fn name_create(
        &mut self,
        cred: Cred,
        name: String,
        security: NameSecurity,
    ) -> Result<Option<Reply>, Error> {
        check_name("name", &name)?;
        security.validate()?;
        if let Some(e) = self.names.get(&name) {
            cred.check_owner(e.owner, &format!("name {name}"))?;
        }
        match self.security.get(&name) {
            Some((owner, _)) => cred.check_owner(*owner, &format!("name {name}"))?,
            None if self.security.len() >= self.policy.max_names => {
                return Err(Error::NoMem(format!(
                    "irmd holds {} secure names, its limit",
                    self.policy.max_names
                )))
            }
            None => {}
        }
        // The one who sets it owns it (root taking over a user's makes it
        // apply to everyone's flows).
        let owner = cred.uid;
        let kws: Vec<&str> = security
            .paths()
            .iter()
            .filter(|(_, p)| p.is_some())
            .map(|(k, _)| *k)
            .collect();
        info!("Name {name} created with {}.", kws.join(", "));
        self.security.insert(name, (owner, security));
        Ok(Some(Reply::Ok))
    }

    pub(super) fn name_destroy(
        &mut self,
        cred: Cred,
        name: String,
    ) -> Result<Option<Reply>, Error> {
        let Some((owner, _)) = self.security.get(&name) else {
            return Err(Error::Name(format!("{name} has no configuration")));
        };
        cred.check_owner(*owner, &format!("name {name}"))?;
        self.security.remove(&name);
        info!("Name {name} destroyed.");
        Ok(Some(Reply::Ok))
    }

    /// What the library of a flow to or from `name`, in a process of `uid`,
    /// gets: a configuration root set applies to everyone's flows, a user's
    /// only to that user's — so no user can make another's client trust
    /// their CA (or their server use their key).
    pub(super) fn security_of(&self, name: &str, uid: u32) -> Option<NameSecurity> {
        self.security
            .get(name)
            .filter(|(owner, _)| *owner == 0 || *owner == uid)
            .map(|(_, s)| s.clone())
    }
}
