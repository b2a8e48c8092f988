-- Individual appointments with their practitioner, business and appointment type by name,
-- the patient's attendance, and the appointment's status (deleted ones kept, flagged).
select
  a.account,
  a.id,
  a.starts_at,
  a.ends_at,
  a.patient_id,
  a.practitioner_id,
  nullif(trim(concat(p.first_name, ' ', p.last_name)), '') as practitioner_name,
  a.business_id,
  b.business_name,
  a.appointment_type_id,
  t.name as appointment_type_name,
  case
    when a.did_not_arrive then 'did_not_arrive'
    when a.patient_arrived then 'patient_arrived'
    else 'not_recorded'
  end as attendance,
  a.status,
  a.is_deleted,
  a.updated_at
from {{ ref('individual_appointments_current') }} as a
left join {{ ref('practitioners_current') }} as p on p.account = a.account and p.id = a.practitioner_id
left join {{ ref('businesses_current') }} as b on b.account = a.account and b.id = a.business_id
left join {{ ref('appointment_types_current') }} as t on t.account = a.account and t.id = a.appointment_type_id
