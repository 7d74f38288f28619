-- Reverts 0001. Extensions stay: other schemas of this database may use them.
drop schema pgseek cascade;
