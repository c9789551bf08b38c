"""People, roles and tenants (spec 15.3, 9.4): who is calling (`principal`), their
passwords (`passwords`), accounts (`users`), bearer tokens (`tokens`) and the back-off
after wrong passwords (`throttle`)."""
