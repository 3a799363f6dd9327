//! The account lane: our KeyPackage stock and claim log, and the claims of an add.

use super::*;

impl Core {
    pub(super) fn next_for_account(&mut self) -> Result<Option<(Waiting, Request)>, SyncError> {
        while let Some(claims) = self.claims.front() {
            if claims.remaining.is_empty() {
                // Nobody to claim for: nothing to add.
                let claims = self.claims.pop_front().expect("looked at");
                self.queue_add(claims);
                continue;
            }
            // One round trip for up to MAX_CLAIMS members of an add, not one each.
            let owners = claims
                .remaining
                .iter()
                .take(MAX_CLAIMS)
                .map(|claimee| match claimee {
                    Claimee::Contact(name) => Ok(self.profile.contact(name)?.client_id()),
                    Claimee::Member(fingerprint) => Ok(fingerprint.0),
                })
                .collect::<Result<Vec<_>, ProfileError>>()?;
            let waiting = Waiting::Claims(owners.len());
            return Ok(Some((waiting, Request::ClaimKeyPackages { owners })));
        }
        if let Some(publish) = self.publish.take() {
            return Ok(Some((
                Waiting::Publish,
                Request::PublishKeyPackages(publish),
            )));
        }
        let state = self.state(&Lane::Account);
        if state.behind {
            state.behind = false;
            self.claim_log_due = true;
            return Ok(Some((Waiting::Stock, Request::KeyPackageStock)));
        }
        if std::mem::take(&mut self.claim_log_due) {
            let after = self.profile.claim_log_seq()?;
            return Ok(Some((Waiting::ClaimLog, Request::ClaimLog { after })));
        }
        Ok(None)
    }

    pub(super) fn account_answer(
        &mut self,
        waiting: Waiting,
        answer: Answer,
    ) -> Result<(), SyncError> {
        match (waiting, answer) {
            (Waiting::Claims(count), answer) => self.claims_answered(count, answer)?,
            (
                Waiting::Stock,
                Ok(Response::KeyPackageStock {
                    one_time,
                    last_resort,
                }),
            ) => {
                let missing_last_resort = !bool::from(last_resort);
                if one_time < KEY_PACKAGE_LOW || missing_last_resort {
                    let fresh = if one_time < KEY_PACKAGE_LOW {
                        KEY_PACKAGE_STOCK - one_time
                    } else {
                        0
                    };
                    let mut packages = Vec::new();
                    for _ in 0..fresh {
                        packages.push(self.profile.new_key_package(false)?.into());
                    }
                    let last_resort = if missing_last_resort {
                        self.profile.new_key_package(true)?
                    } else {
                        Vec::new()
                    };
                    let publish = PublishKeyPackages {
                        one_time: packages,
                        last_resort: last_resort.into(),
                    };
                    self.publish = Some(publish);
                }
            }
            (Waiting::Publish, Ok(_)) => {}
            (Waiting::ClaimLog, Ok(Response::ClaimLog { entries })) => {
                let claims: Vec<Claim> = entries
                    .into_iter()
                    .map(|e| Claim {
                        seq: e.seq,
                        claimer: e.claimer,
                        at: e.at,
                        last_resort: e.last_resort.into(),
                        reference: e.reference.into(),
                    })
                    .collect();
                for alert in self.profile.record_claims(&claims)? {
                    self.notices.push_back(Notice::Alert(alert));
                }
                // Read on until the log is done; then forget keys nobody can use any more.
                self.claim_log_due = !claims.is_empty();
                if claims.is_empty() {
                    let now = self.profile.now() as u64;
                    let forgotten = self.profile.forget_unusable_key_packages(now)?;
                    if forgotten > 0 {
                        tracing::info!(forgotten, "deleted KeyPackage keys nobody can use");
                    }
                }
            }
            (_, Err(e)) => {
                tracing::warn!(code = ?e.code, "the delivery node refused an account request");
                self.park(&Lane::Account);
            }
            (_, Ok(other)) => return Err(SyncError::Unexpected(format!("{other:?}"))),
        }
        Ok(())
    }

    /// The answer to a request claiming KeyPackages for the first `count` claimees of the
    /// first add. Claims refused for a reason that passes go again later; every KeyPackage
    /// handed out is kept (the owner's stock paid for it).
    pub(super) fn claims_answered(
        &mut self,
        count: usize,
        answer: Answer,
    ) -> Result<(), SyncError> {
        let answers: Vec<Result<Vec<u8>, ErrorResponse>> = match answer {
            Ok(Response::KeyPackages { claims }) if claims.len() == count => claims
                .into_iter()
                .map(|answer| match answer {
                    ClaimAnswer::KeyPackage(kp) => Ok(kp.as_slice().to_vec()),
                    ClaimAnswer::Refused(e) => Err(e),
                })
                .collect(),
            // The whole request may pass (the node is busy): every claim goes again.
            Err(e) if passes(e.code) => return Err(SyncError::refused(&e)),
            Err(e) => vec![Err(e); count],
            Ok(other) => {
                let claims = self.claims.pop_front().expect("claims were waiting");
                self.touch_group(claims.group.as_slice(), false);
                let unexpected = SyncError::Unexpected(format!("{other:?}"));
                self.done(claims.ticket, Err(unexpected));
                return Ok(());
            }
        };
        let mut claims = self.claims.pop_front().expect("claims were waiting");
        let mut again = VecDeque::new();
        let mut passing = None;
        for answer in answers {
            let claimee = claims.remaining.pop_front().expect("a claim was made");
            let key_package = match answer {
                Err(e) if passes(e.code) => {
                    again.push_back(claimee);
                    passing.get_or_insert(e);
                    continue;
                }
                answer => self.checked_claim(&claimee, answer),
            };
            match (key_package, &claimee) {
                (Ok(key_package), _) => claims.key_packages.push(key_package),
                (Err(e), Claimee::Member(fingerprint)) => {
                    tracing::warn!(member = %fingerprint.to_hex(), error = %e, "a member is left out of a group started again");
                }
                (Err(e), Claimee::Contact(_)) => {
                    // The add is off: texts asked after it go.
                    self.touch_group(claims.group.as_slice(), false);
                    self.done(claims.ticket, Err(e));
                    return Ok(());
                }
            }
        }
        if let Some(e) = passing {
            again.append(&mut claims.remaining);
            claims.remaining = again;
            self.claims.push_front(claims);
            return Err(SyncError::refused(&e));
        }
        if claims.remaining.is_empty() {
            self.queue_add(claims);
        } else {
            self.claims.push_front(claims);
        }
        Ok(())
    }

    /// A claimed KeyPackage, checked to be of whom it was claimed for; or why there is none.
    pub(super) fn checked_claim(
        &mut self,
        claimee: &Claimee,
        answer: Result<Vec<u8>, ErrorResponse>,
    ) -> Result<Vec<u8>, SyncError> {
        let key_package = match answer {
            Ok(key_package) => key_package,
            Err(e) if matches!(e.code, ErrorCode::NoKeyPackage | ErrorCode::UnknownClient) => {
                let never = match e.code {
                    ErrorCode::UnknownClient => {
                        " (they never connected to it, or their invite code names another node)"
                    }
                    _ => "",
                };
                return Err(SyncError::Refused {
                    code: e.code,
                    detail: format!(
                        "{} has no KeyPackage on the delivery node{never}: they must connect to \
                         it once (`mlschat sync`, or run the daemon) before they can be added",
                        claimee.describe()
                    ),
                });
            }
            Err(e) => return Err(SyncError::refused(&e)),
        };
        match claimee {
            Claimee::Contact(name) => {
                let contact = self.profile.contact(name)?;
                self.profile.check_claimed(&contact, &key_package)?;
            }
            Claimee::Member(fingerprint) => {
                self.profile
                    .check_claimed_member(fingerprint, &key_package)?;
            }
        }
        Ok(key_package)
    }

    /// Every KeyPackage is claimed: the add waits in the group's queue.
    pub(super) fn queue_add(&mut self, claims: Claims) {
        // Texts asked after the add waited for its claims; now they wait for its commit.
        self.touch_group(claims.group.as_slice(), false);
        if claims.key_packages.is_empty() {
            return self.done(claims.ticket, Ok(()));
        }
        let intent = Intent::Add {
            key_packages: claims.key_packages,
        };
        match self
            .profile
            .queue_intent(&claims.group, &intent, claims.asked)
        {
            Ok(seq) => {
                self.intents.insert(seq, claims.ticket);
            }
            Err(e) => self.done(claims.ticket, Err(e.into())),
        }
    }
}
