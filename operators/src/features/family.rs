//! What every feature family of the event windows is made of: features
//! computed from the family's own accumulator.

use amoskys_schemas::{FeatureDef, FeatureDtype};

/// A feature of a family whose accumulator is `A`.
pub struct FamilyFeature<A> {
    pub def: FeatureDef,
    pub compute: fn(&A) -> Option<f64>,
}

/// A feature of family `family`, read from the source of the same name.
pub(super) const fn dspec<A>(
    name: &'static str,
    family: &'static str,
    unit: &'static str,
    dtype: FeatureDtype,
    description: &'static str,
    null_when: Option<&'static str>,
    compute: fn(&A) -> Option<f64>,
) -> FamilyFeature<A> {
    let def = FeatureDef {
        name,
        family,
        source: family,
        unit,
        dtype,
        description,
        null_when,
    };
    FamilyFeature { def, compute }
}
