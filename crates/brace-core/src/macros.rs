//! Macros the layer crates share.

/// Defines `get_ref`, `get_mut` and `into_inner` for a service whose wrapped service is in
/// a field named `inner` (as tower-http's macro of the same name does), so that every brace
/// service offers the same accessors.
#[doc(hidden)]
#[macro_export]
macro_rules! define_inner_service_accessors {
    () => {
        /// A reference to the inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// A mutable reference to the inner service.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Consumes `self`, returning the inner service.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}
