
-- release: ARGV[1] lease id. Gives the lease's events back to the head of the queue now (a drain
-- that stops without writing them). Returns how many went back.
local err = check_keys()
if err then return err end
local id, e1 = int_arg(1, 1, 9007199254740991)
if e1 then return e1 end
return requeue(id)
