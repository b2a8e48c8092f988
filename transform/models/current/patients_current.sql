-- One row per patient: its latest record across the three patient streams, with a status.
-- Archiving may leave updated_at alone, so archived_at and deleted_at count as changes too.
{{
  current_state(
    'tap_cliniko',
    streams=[
      ('patients', 'active'),
      ('archived_patients', 'archived'),
      ('deleted_patients', 'deleted'),
    ],
    columns=[
      'id', 'title', 'first_name', 'preferred_first_name', 'last_name', 'date_of_birth',
      'sex', 'gender', 'gender_identity', 'email', 'address_1', 'address_2', 'address_3',
      'city', 'state', 'post_code', 'country', 'country_code', 'time_zone', 'occupation',
      'emergency_contact', 'label', 'notes', 'appointment_notes', 'referral_source',
      'reminder_type', 'medicare', 'medicare_reference_number', 'dva_card_number',
      'old_reference_id', 'invoice_default_to', 'invoice_email', 'invoice_extra_information',
      'accepted_privacy_policy', 'accepted_email_marketing', 'accepted_sms_marketing',
      'receives_confirmation_emails', 'receives_cancellation_emails',
      'patient_phone_numbers', 'pronouns', 'custom_fields',
      'created_at', 'updated_at', 'archived_at', 'deleted_at', 'merged_at',
    ],
    changed_at='greatest(updated_at, coalesce(archived_at, updated_at), coalesce(deleted_at, updated_at))',
  )
}}
