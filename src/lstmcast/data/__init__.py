"""Data: reading (io), invariants (validate), scaling, window arithmetic, preparation."""
