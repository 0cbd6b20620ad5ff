//! Facts about Postgres types that decoding needs: each column type's name (the event's
//! `columns[].type`) and which [`Conversion`] turns its text into JSON.
//!
//! Built-in types (the `pg_catalog` types of a fresh cluster) are a static table, [`BUILTIN`],
//! so ordinary tables need no catalog query at all. User types (enums, domains, arrays of them,
//! composites, ranges, extension types, or built-ins newer than this table) are looked up in
//! `pg_type` by [`TypeCache::load`] in one query, which also follows domain → base type and
//! array → element chains, so a domain over `numeric` converts like `numeric` and `mood[]`
//! like an array of text. The pipeline calls it (through
//! [`super::events::EventBuilder::load_catalog`]) when a `Relation` message names types the
//! cache does not know yet, before the relation's next row.
//!
//! The facts come from the catalog as it is now, not as it was when the WAL was written: a
//! type dropped since then is unknown and its values are passed on as text.

use super::values::Conversion;
use std::collections::HashMap;

/// What the CDC knows about one type from `pg_type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeFacts {
    pub oid: u32,
    /// `typname`: `mood`, `_mood`, `positive_numeric`.
    pub name: String,
    pub namespace: String,
    pub kind: TypeKind,
    /// `typdelim`: the separator of this type's elements in an array literal.
    pub delimiter: u8,
}

/// `typtype`, with the chain each kind leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeKind {
    /// A base type (`typtype = 'b'`) that is not an array.
    Base,
    /// A varlena array (`typcategory = 'A'`, `typelem` set) of `element`.
    Array { element: u32 },
    /// A domain (`typtype = 'd'`): converts as its base type.
    Domain { base: u32 },
    /// An enum (`typtype = 'e'`): its label, as text.
    Enum,
    /// Composite, range, multirange, pseudo: their text.
    Other,
}

/// Built-in types, sorted by oid: `(oid, typname, element oid if an array else 0)`. Generated
/// from `pg_type` of PostgreSQL 15 (`pg_catalog`, without catalog row types); the
/// `builtin_table_matches_the_server` test checks it against the running server.
pub const BUILTIN: &[(u32, &str, u32)] = &[
    (16, "bool", 0),
    (17, "bytea", 0),
    (18, "char", 0),
    (19, "name", 0),
    (20, "int8", 0),
    (21, "int2", 0),
    (22, "int2vector", 0),
    (23, "int4", 0),
    (24, "regproc", 0),
    (25, "text", 0),
    (26, "oid", 0),
    (27, "tid", 0),
    (28, "xid", 0),
    (29, "cid", 0),
    (30, "oidvector", 0),
    (32, "pg_ddl_command", 0),
    (114, "json", 0),
    (142, "xml", 0),
    (143, "_xml", 142),
    (194, "pg_node_tree", 0),
    (199, "_json", 114),
    (269, "table_am_handler", 0),
    (271, "_xid8", 5069),
    (325, "index_am_handler", 0),
    (600, "point", 0),
    (601, "lseg", 0),
    (602, "path", 0),
    (603, "box", 0),
    (604, "polygon", 0),
    (628, "line", 0),
    (629, "_line", 628),
    (650, "cidr", 0),
    (651, "_cidr", 650),
    (700, "float4", 0),
    (701, "float8", 0),
    (705, "unknown", 0),
    (718, "circle", 0),
    (719, "_circle", 718),
    (774, "macaddr8", 0),
    (775, "_macaddr8", 774),
    (790, "money", 0),
    (791, "_money", 790),
    (829, "macaddr", 0),
    (869, "inet", 0),
    (1000, "_bool", 16),
    (1001, "_bytea", 17),
    (1002, "_char", 18),
    (1003, "_name", 19),
    (1005, "_int2", 21),
    (1006, "_int2vector", 22),
    (1007, "_int4", 23),
    (1008, "_regproc", 24),
    (1009, "_text", 25),
    (1010, "_tid", 27),
    (1011, "_xid", 28),
    (1012, "_cid", 29),
    (1013, "_oidvector", 30),
    (1014, "_bpchar", 1042),
    (1015, "_varchar", 1043),
    (1016, "_int8", 20),
    (1017, "_point", 600),
    (1018, "_lseg", 601),
    (1019, "_path", 602),
    (1020, "_box", 603),
    (1021, "_float4", 700),
    (1022, "_float8", 701),
    (1027, "_polygon", 604),
    (1028, "_oid", 26),
    (1033, "aclitem", 0),
    (1034, "_aclitem", 1033),
    (1040, "_macaddr", 829),
    (1041, "_inet", 869),
    (1042, "bpchar", 0),
    (1043, "varchar", 0),
    (1082, "date", 0),
    (1083, "time", 0),
    (1114, "timestamp", 0),
    (1115, "_timestamp", 1114),
    (1182, "_date", 1082),
    (1183, "_time", 1083),
    (1184, "timestamptz", 0),
    (1185, "_timestamptz", 1184),
    (1186, "interval", 0),
    (1187, "_interval", 1186),
    (1231, "_numeric", 1700),
    (1263, "_cstring", 2275),
    (1266, "timetz", 0),
    (1270, "_timetz", 1266),
    (1560, "bit", 0),
    (1561, "_bit", 1560),
    (1562, "varbit", 0),
    (1563, "_varbit", 1562),
    (1700, "numeric", 0),
    (1790, "refcursor", 0),
    (2201, "_refcursor", 1790),
    (2202, "regprocedure", 0),
    (2203, "regoper", 0),
    (2204, "regoperator", 0),
    (2205, "regclass", 0),
    (2206, "regtype", 0),
    (2207, "_regprocedure", 2202),
    (2208, "_regoper", 2203),
    (2209, "_regoperator", 2204),
    (2210, "_regclass", 2205),
    (2211, "_regtype", 2206),
    (2249, "record", 0),
    (2275, "cstring", 0),
    (2276, "any", 0),
    (2277, "anyarray", 0),
    (2278, "void", 0),
    (2279, "trigger", 0),
    (2280, "language_handler", 0),
    (2281, "internal", 0),
    (2283, "anyelement", 0),
    (2287, "_record", 2249),
    (2776, "anynonarray", 0),
    (2949, "_txid_snapshot", 2970),
    (2950, "uuid", 0),
    (2951, "_uuid", 2950),
    (2970, "txid_snapshot", 0),
    (3115, "fdw_handler", 0),
    (3220, "pg_lsn", 0),
    (3221, "_pg_lsn", 3220),
    (3310, "tsm_handler", 0),
    (3361, "pg_ndistinct", 0),
    (3402, "pg_dependencies", 0),
    (3500, "anyenum", 0),
    (3614, "tsvector", 0),
    (3615, "tsquery", 0),
    (3642, "gtsvector", 0),
    (3643, "_tsvector", 3614),
    (3644, "_gtsvector", 3642),
    (3645, "_tsquery", 3615),
    (3734, "regconfig", 0),
    (3735, "_regconfig", 3734),
    (3769, "regdictionary", 0),
    (3770, "_regdictionary", 3769),
    (3802, "jsonb", 0),
    (3807, "_jsonb", 3802),
    (3831, "anyrange", 0),
    (3838, "event_trigger", 0),
    (3904, "int4range", 0),
    (3905, "_int4range", 3904),
    (3906, "numrange", 0),
    (3907, "_numrange", 3906),
    (3908, "tsrange", 0),
    (3909, "_tsrange", 3908),
    (3910, "tstzrange", 0),
    (3911, "_tstzrange", 3910),
    (3912, "daterange", 0),
    (3913, "_daterange", 3912),
    (3926, "int8range", 0),
    (3927, "_int8range", 3926),
    (4072, "jsonpath", 0),
    (4073, "_jsonpath", 4072),
    (4089, "regnamespace", 0),
    (4090, "_regnamespace", 4089),
    (4096, "regrole", 0),
    (4097, "_regrole", 4096),
    (4191, "regcollation", 0),
    (4192, "_regcollation", 4191),
    (4451, "int4multirange", 0),
    (4532, "nummultirange", 0),
    (4533, "tsmultirange", 0),
    (4534, "tstzmultirange", 0),
    (4535, "datemultirange", 0),
    (4536, "int8multirange", 0),
    (4537, "anymultirange", 0),
    (4538, "anycompatiblemultirange", 0),
    (4600, "pg_brin_bloom_summary", 0),
    (4601, "pg_brin_minmax_multi_summary", 0),
    (5017, "pg_mcv_list", 0),
    (5038, "pg_snapshot", 0),
    (5039, "_pg_snapshot", 5038),
    (5069, "xid8", 0),
    (5077, "anycompatible", 0),
    (5078, "anycompatiblearray", 0),
    (5079, "anycompatiblenonarray", 0),
    (5080, "anycompatiblerange", 0),
    (6150, "_int4multirange", 4451),
    (6151, "_nummultirange", 4532),
    (6152, "_tsmultirange", 4533),
    (6153, "_tstzmultirange", 4534),
    (6155, "_datemultirange", 4535),
    (6157, "_int8multirange", 4536),
];

/// Chains longer than this (domains over domains over arrays...) are cut: a guard against
/// cycles, not a limit Postgres users reach.
const MAX_CHAIN: usize = 8;

/// The oid of `box`, the only built-in type whose array delimiter is `;`.
const BOX_OID: u32 = 603;

/// The built-in entry of `oid`, if it is built in.
pub fn builtin(oid: u32) -> Option<(&'static str, u32)> {
    BUILTIN
        .binary_search_by_key(&oid, |&(o, _, _)| o)
        .ok()
        .map(|i| (BUILTIN[i].1, BUILTIN[i].2))
}

/// Type facts: the built-in table plus what was loaded from `pg_type`.
#[derive(Debug, Default, Clone)]
pub struct TypeCache {
    loaded: HashMap<u32, TypeFacts>,
    generation: u64,
}

/// One query for the requested oids and everything their domain and array chains lead to.
const LOAD_QUERY: &str = "\
    WITH RECURSIVE wanted(oid, depth) AS ( \
        SELECT o, 0 FROM unnest($1::oid[]) AS o \
      UNION \
        SELECT CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.typelem END, w.depth + 1 \
        FROM pg_type t JOIN wanted w ON t.oid = w.oid \
        WHERE w.depth < 8 AND CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.typelem END <> 0 \
    ) \
    SELECT t.oid, t.typname::text, n.nspname::text, t.typtype::text, t.typbasetype, t.typelem, \
           t.typcategory::text, t.typdelim::text \
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
    WHERE t.oid IN (SELECT oid FROM wanted)";

impl TypeCache {
    pub fn new() -> TypeCache {
        TypeCache::default()
    }

    /// The oids among `oids` that are neither built in nor loaded, sorted and deduplicated: what
    /// [`TypeCache::load`] should be given.
    pub fn missing(&self, oids: impl Iterator<Item = u32>) -> Vec<u32> {
        let mut missing: Vec<u32> = oids.filter(|&oid| !self.knows(oid)).collect();
        missing.sort_unstable();
        missing.dedup();
        missing
    }

    /// Loads the facts of `oids` and of every type their domain and array chains lead to, with
    /// one parameterized query. Oids not in `pg_type` (dropped types) are simply not cached.
    pub async fn load(
        &mut self,
        client: &tokio_postgres::Client,
        oids: &[u32],
    ) -> Result<(), tokio_postgres::Error> {
        if oids.is_empty() {
            return Ok(());
        }
        let rows = client.query(LOAD_QUERY, &[&oids]).await?;
        for row in rows {
            let first = |i: usize| -> Result<u8, tokio_postgres::Error> {
                Ok(row.try_get::<_, String>(i)?.bytes().next().unwrap_or(b' '))
            };
            let (typtype, category) = (first(3)?, first(6)?);
            let (base, element): (u32, u32) = (row.try_get(4)?, row.try_get(5)?);
            let kind = match typtype {
                b'd' => TypeKind::Domain { base },
                b'e' => TypeKind::Enum,
                b'b' if category == b'A' && element != 0 => TypeKind::Array { element },
                b'b' => TypeKind::Base,
                _ => TypeKind::Other,
            };
            self.insert(TypeFacts {
                oid: row.try_get(0)?,
                name: row.try_get(1)?,
                namespace: row.try_get(2)?,
                kind,
                delimiter: first(7)?,
            });
        }
        // Even when nothing came back: a later resolution should not wait for these again.
        self.generation += 1;
        Ok(())
    }

    /// Adds facts learned elsewhere (tests, fuzzing, a warm start).
    pub fn insert(&mut self, facts: TypeFacts) {
        self.loaded.insert(facts.oid, facts);
        self.generation += 1;
    }

    /// Changes whenever facts are added: relations resolved against an older generation are
    /// resolved again.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn knows(&self, oid: u32) -> bool {
        builtin(oid).is_some() || self.loaded.contains_key(&oid)
    }

    /// The loaded facts of a user type.
    pub fn facts(&self, oid: u32) -> Option<&TypeFacts> {
        self.loaded.get(&oid)
    }

    /// The type's `pg_type` name (`int4`, `_text`, `mood`), if known.
    pub fn name(&self, oid: u32) -> Option<&str> {
        match builtin(oid) {
            Some((name, _)) => Some(name),
            None => self.loaded.get(&oid).map(|f| f.name.as_str()),
        }
    }

    /// How values of this type become JSON; unknown types convert as text.
    pub fn conversion(&self, oid: u32) -> Conversion {
        self.conversion_within(oid, MAX_CHAIN)
    }

    fn conversion_within(&self, oid: u32, budget: usize) -> Conversion {
        let Some(budget) = budget.checked_sub(1) else {
            return Conversion::Text;
        };
        let array = |element: u32| Conversion::Array {
            element: Box::new(self.conversion_within(element, budget)),
            delimiter: self.delimiter(element),
        };
        if let Some((_, element)) = builtin(oid) {
            return match oid {
                16 => Conversion::Bool,
                // int8, int2, int4, oid, xid, cid, xid8
                20 | 21 | 23 | 26 | 28 | 29 | 5069 => Conversion::Integer,
                700 | 701 => Conversion::Float,
                114 | 3802 => Conversion::Json,
                1184 => Conversion::Timestamptz,
                1114 => Conversion::Timestamp,
                17 => Conversion::Bytea,
                _ if element != 0 => array(element),
                _ => Conversion::Text,
            };
        }
        match self.loaded.get(&oid).map(|f| f.kind) {
            Some(TypeKind::Domain { base }) => self.conversion_within(base, budget),
            Some(TypeKind::Array { element }) => array(element),
            _ => Conversion::Text,
        }
    }

    fn delimiter(&self, oid: u32) -> u8 {
        if oid == BOX_OID {
            return b';';
        }
        self.loaded.get(&oid).map_or(b',', |f| f.delimiter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(oid: u32, name: &str, kind: TypeKind) -> TypeFacts {
        TypeFacts {
            oid,
            name: name.into(),
            namespace: "public".into(),
            kind,
            delimiter: b',',
        }
    }

    #[test]
    fn builtin_table_is_sorted_and_names_common_types() {
        assert!(BUILTIN.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(builtin(23), Some(("int4", 0)));
        assert_eq!(builtin(1007), Some(("_int4", 23)));
        assert_eq!(builtin(1009), Some(("_text", 25)));
        assert_eq!(builtin(3802), Some(("jsonb", 0)));
        assert_eq!(builtin(16384), None);
    }

    #[test]
    fn builtin_conversions() {
        let cache = TypeCache::new();
        assert_eq!(cache.conversion(16), Conversion::Bool);
        assert_eq!(cache.conversion(20), Conversion::Integer);
        assert_eq!(cache.conversion(1700), Conversion::Text);
        assert_eq!(cache.conversion(1184), Conversion::Timestamptz);
        assert_eq!(
            cache.conversion(1007),
            Conversion::Array {
                element: Box::new(Conversion::Integer),
                delimiter: b','
            }
        );
        assert_eq!(
            cache.conversion(1020),
            Conversion::Array {
                element: Box::new(Conversion::Text),
                delimiter: b';'
            }
        );
        // Unknown types are text until loaded.
        assert_eq!(cache.conversion(99999), Conversion::Text);
        assert_eq!(cache.name(99999), None);
    }

    #[test]
    fn user_types_follow_domain_and_array_chains() {
        let mut cache = TypeCache::new();
        assert_eq!(
            cache.missing([23, 16500, 16501, 16500].into_iter()),
            vec![16500, 16501]
        );
        let before = cache.generation();
        cache.insert(facts(16500, "mood", TypeKind::Enum));
        cache.insert(facts(16501, "_mood", TypeKind::Array { element: 16500 }));
        cache.insert(facts(16502, "price", TypeKind::Domain { base: 1700 }));
        cache.insert(facts(16503, "_price", TypeKind::Array { element: 16502 }));
        cache.insert(facts(16504, "flag", TypeKind::Domain { base: 16 }));
        cache.insert(facts(16505, "flags", TypeKind::Domain { base: 1000 }));
        assert!(cache.generation() > before);
        assert!(cache.missing([16500, 16501].into_iter()).is_empty());
        assert_eq!(cache.name(16501), Some("_mood"));
        assert_eq!(cache.conversion(16500), Conversion::Text);
        assert_eq!(
            cache.conversion(16501),
            Conversion::Array {
                element: Box::new(Conversion::Text),
                delimiter: b','
            }
        );
        assert_eq!(cache.conversion(16504), Conversion::Bool);
        assert_eq!(
            cache.conversion(16505),
            Conversion::Array {
                element: Box::new(Conversion::Bool),
                delimiter: b','
            }
        );
        // A cycle (which pg_type cannot hold, but a confused cache could) ends as text.
        cache.insert(facts(16600, "a", TypeKind::Domain { base: 16601 }));
        cache.insert(facts(16601, "b", TypeKind::Domain { base: 16600 }));
        assert_eq!(cache.conversion(16600), Conversion::Text);
    }
}
