-- position.lua (after lib.lua): the channel's {epoch, last_seq}; {"", 0}
-- for an unknown channel unless ARGV[7] is "1": then it is created (a
-- device cursor at seq 0 needs an epoch to belong to).
local st = load(ARGV[7] == '1')
if not st then return { '', 0 } end
if st.s == 0 then touch_meta() end
return { st.e, st.s }
