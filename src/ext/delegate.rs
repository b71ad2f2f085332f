//! The accessors every adapter gives to the stream it wraps (futures-util's
//! `delegate_access_inner!`).

/// Implements `get_ref`, `get_mut`, `get_pin_mut` and `into_inner` in an adapter's inherent
/// impl. `$field` is the (pinned) field holding the input; each `.` in the parentheses
/// unwraps one more level (`(.)` for a `Fuse<S>` field).
macro_rules! delegate_access_inner {
    ($field:ident, $inner:ty, ($($ind:tt)*)) => {
        /// The stream this adapter reads from.
        ///
        /// ```
        /// use futures::{stream, Stream, StreamExt};
        /// use mongotail::{Namespace, Op, OpKind, OpStreamExt};
        ///
        /// # futures::executor::block_on(async {
        /// let op = || Ok(Op::new(OpKind::Insert, Namespace::parse("a.b").unwrap(), None));
        /// let mut kept = stream::iter(vec![op(), op()]).filter_ns(|_, _| true);
        /// assert_eq!(kept.get_ref().size_hint(), (2, Some(2)));
        /// kept.get_mut().next().await; // taken from the input, past the adapter
        /// let input = kept.into_inner();
        /// assert_eq!(input.count().await, 1);
        /// # });
        /// ```
        pub fn get_ref(&self) -> &$inner {
            (&self.$field) $($ind get_ref())*
        }

        /// The stream this adapter reads from, mutably. Items taken from it directly
        /// bypass the adapter.
        pub fn get_mut(&mut self) -> &mut $inner {
            (&mut self.$field) $($ind get_mut())*
        }

        /// The stream this adapter reads from, pinned. Items taken from it directly
        /// bypass the adapter.
        pub fn get_pin_mut(self: ::std::pin::Pin<&mut Self>) -> ::std::pin::Pin<&mut $inner> {
            self.project().$field $($ind get_pin_mut())*
        }

        /// Consumes the adapter and returns the stream it reads from; whatever the adapter
        /// holds (ops buffered or being fetched) is dropped.
        pub fn into_inner(self) -> $inner {
            self.$field $($ind into_inner())*
        }
    };
}
