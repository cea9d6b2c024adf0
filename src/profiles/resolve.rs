//! `based_on` inheritance: each profile starts from its parent's resolved
//! content, replaces what it spells out and applies its add/remove edits.

use std::collections::HashMap;

use super::error::{Problem, TableError};
use super::spec::{error, Position, SetSpec, Spec};
use super::Profile;

/// Resolves every profile, in table order.
pub fn resolve(specs: &[Spec], origin: &str) -> Result<Vec<Profile>, TableError> {
    let index: HashMap<&str, usize> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut resolved: Vec<Option<Profile>> = vec![None; specs.len()];

    for start in 0..specs.len() {
        // Walk up the parent chain to the first resolved ancestor (or a root),
        // then resolve back down. Iterative, so a long chain cannot overflow
        // the stack.
        let mut chain = vec![start];
        loop {
            let current = chain[chain.len() - 1];
            if resolved[current].is_some() {
                chain.pop();
                break;
            }
            let Some((parent, at)) = &specs[current].parent else {
                break;
            };
            let Some(&p) = index.get(parent.as_str()) else {
                return Err(unknown_parent(&specs[current], parent, *at, specs, origin));
            };
            if let Some(loop_start) = chain.iter().position(|&c| c == p) {
                let mut ids: Vec<String> = chain[loop_start..]
                    .iter()
                    .map(|&c| specs[c].id.clone())
                    .collect();
                ids.push(specs[p].id.clone());
                return Err(error(
                    origin,
                    Some(specs[p].id_at),
                    Problem::Cycle { chain: ids },
                ));
            }
            chain.push(p);
        }
        for &i in chain.iter().rev() {
            let parent = specs[i]
                .parent
                .as_ref()
                .and_then(|(p, _)| index.get(p.as_str()))
                .and_then(|&p| resolved[p].as_ref());
            resolved[i] = Some(build(&specs[i], parent, origin)?);
        }
    }
    Ok(resolved.into_iter().flatten().collect())
}

fn unknown_parent(
    spec: &Spec,
    parent: &str,
    at: Position,
    specs: &[Spec],
    origin: &str,
) -> TableError {
    let suggestion = specs
        .iter()
        .map(|s| (s.id.as_str(), strsim::jaro_winkler(parent, &s.id)))
        .filter(|(_, score)| *score >= 0.8)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(id, _)| id.to_string());
    error(
        origin,
        Some(at),
        Problem::UnknownParent {
            id: spec.id.clone(),
            parent: parent.to_string(),
            suggestion,
        },
    )
}

fn build(spec: &Spec, parent: Option<&Profile>, origin: &str) -> Result<Profile, TableError> {
    let features = apply(
        spec,
        &spec.features,
        parent.map(|p| (p.features, p.id.as_str())),
        true,
        origin,
    )?;
    let protocol_features = apply(
        spec,
        &spec.protocol,
        parent.map(|p| (p.protocol_features, p.id.as_str())),
        false,
        origin,
    )?;
    let max_queue_pairs = limit(
        spec,
        spec.max_queue_pairs,
        parent.map(|p| p.max_queue_pairs),
        "max_queue_pairs",
        |v| (1..=128).contains(&v),
        |id, value| Problem::QueuePairs { id, value },
        origin,
    )?;
    let max_queue_size = limit(
        spec,
        spec.max_queue_size,
        parent.map(|p| p.max_queue_size),
        "max_queue_size",
        |v| (1..=32768).contains(&v) && (v as u64).is_power_of_two(),
        |id, value| Problem::QueueSize { id, value },
        origin,
    )?;
    Ok(Profile {
        id: spec.id.clone(),
        description: spec.description.clone(),
        features,
        protocol_features,
        max_queue_pairs,
        max_queue_size,
    })
}

/// One mask: the explicit base, else the parent's; then the edits.
fn apply(
    spec: &Spec,
    set: &SetSpec,
    inherited: Option<(u64, &str)>,
    required: bool,
    origin: &str,
) -> Result<u64, TableError> {
    let fail = |at: Position, problem| Err(error(origin, Some(at), problem));
    let (mut mask, base) = match (set.base, inherited) {
        (Some(own), _) => (own, format!("its own {}", set.keys.list)),
        (None, Some((theirs, parent))) => (theirs, format!("\"{parent}\"")),
        (None, None) if required => {
            return fail(
                spec.id_at,
                Problem::Missing {
                    id: spec.id.clone(),
                    key: set.keys.list,
                },
            )
        }
        (None, None) => (0, String::new()),
    };
    let edits = set
        .add
        .iter()
        .map(|e| (e, set.keys.add, true))
        .chain(set.remove.iter().map(|e| (e, set.keys.remove, false)));
    for (edit, key, adding) in edits {
        if inherited.is_none() {
            return fail(
                edit.at,
                Problem::EditWithoutParent {
                    id: spec.id.clone(),
                    key,
                },
            );
        }
        let present = mask & edit.mask != 0;
        if adding && present {
            return fail(
                edit.at,
                Problem::AlreadyPresent {
                    id: spec.id.clone(),
                    key,
                    name: edit.name.to_string(),
                    base,
                },
            );
        }
        if !adding && !present {
            return fail(
                edit.at,
                Problem::NotPresent {
                    id: spec.id.clone(),
                    key,
                    name: edit.name.to_string(),
                    base,
                },
            );
        }
        mask = if adding {
            mask | edit.mask
        } else {
            mask & !edit.mask
        };
    }
    Ok(mask)
}

/// A queue limit: the profile's own value, else the parent's, checked.
fn limit(
    spec: &Spec,
    own: Option<(i64, Position)>,
    inherited: Option<u16>,
    key: &'static str,
    valid: impl Fn(i64) -> bool,
    problem: impl Fn(String, i64) -> Problem,
    origin: &str,
) -> Result<u16, TableError> {
    let (value, at) = match (own, inherited) {
        (Some((v, at)), _) => (v, at),
        (None, Some(v)) => return Ok(v),
        (None, None) => {
            return Err(error(
                origin,
                Some(spec.id_at),
                Problem::Missing {
                    id: spec.id.clone(),
                    key,
                },
            ))
        }
    };
    match u16::try_from(value) {
        Ok(v) if valid(value) => Ok(v),
        _ => Err(error(origin, Some(at), problem(spec.id.clone(), value))),
    }
}
